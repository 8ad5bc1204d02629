"""Schemathesis against the API's own OpenAPI document, over real HTTP.

A real `payouts api` subprocess serves the app; for every operation Schemathesis sends it
schema-conforming and schema-violating requests (examples, coverage and fuzzing phases; a
fixed seed and a bounded number of examples, so a run takes seconds and finds the same
things every time) with an admin API key. Every built-in check is on: no 5xx, status codes,
content types, headers and bodies as documented, invalid input refused, valid input not
refused for no reason, required headers enforced, auth enforced (Schemathesis re-sends
without and with a wrong key), undeclared methods answered 405 with a correct Allow.

The document is the one create_app() builds, and test_the_served_document_is_the_one_fuzzed
checks the subprocess serves exactly it. (Loading it from the server inside a fixture,
`schemathesis.pytest.from_fixture`, fails on pytest 9.2: "'Function' object has no
attribute '_nodeid'".)

The server's node URL points at a port nothing listens on, so the readiness probe answers
503 `not_ready` and the manual routes can answer 503 `node_unavailable`: both are
documented, and accepted for exactly those operations rather than excluded. Nothing else is
excluded.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from sqlalchemy import update

from api.app import create_app
from cli.embedded import free_port
from shared.core.claims import link_payouts
from shared.core.models import Payout, Transaction, TxState
from shared.infra.db import session_scope
from shared.sending.transaction_views import TXID_PATTERN
from tests.integration.api.conftest import ApiServer, bearer, start_api
from tests.unit.shared.factories import REGTEST_P2WPKH

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25
# Schemathesis' default for schema-valid requests, plus 422 (see `config`).
ACCEPTED_OR_422 = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]


def config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 20240610,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "operations": [
                {
                    # 503 is these operations' documented answer while the node is down.
                    "include-path-regex": (
                        r"^(/readyz|/v1/payouts/\{payout_id\}/manual/.*"
                        r"|/v1/transactions/\{txid\}/bump)$"
                    ),
                    "checks": {
                        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}
                    },
                },
                {
                    # Input the schema allows but the rules refuse with 422, because JSON
                    # Schema cannot say it: an address's checksum and network, amounts
                    # within PAYOUTS_MAX_PAYOUT_SATS, finite metadata numbers (create); an
                    # opaque cursor (the two lists); a reason without control characters
                    # (cancel); a transaction that pays the payout (submit).
                    "include-name": [
                        "POST /v1/payouts",
                        "GET /v1/payouts",
                        "GET /v1/transactions",
                        "POST /v1/payouts/{payout_id}/cancel",
                        "POST /v1/payouts/{payout_id}/manual/submit",
                    ],
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_OR_422}},
                },
            ],
        }
    )


# The document the app serves (test_the_served_document_is_the_one_fuzzed checks that the
# subprocess serves exactly this one); requests go to the subprocess over HTTP.
schema = schemathesis.openapi.from_dict(create_app().openapi(), config=config())


@pytest.fixture(scope="module")
def fuzz_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """The API with a node that is certainly down (not whatever listens on the default)."""
    env = {**server_env, "PAYOUTS_BITCOIND_URL": f"http://u:p@127.0.0.1:{free_port()}/wallet/w"}
    server = start_api(env, tmp_path_factory.mktemp("api-fuzz"), "api-fuzz")
    yield server
    server.process.stop()


@pytest.fixture
def client(fuzz_server: ApiServer) -> Iterator[httpx.Client]:
    with fuzz_server.client() as http:
        yield http


def test_the_served_document_is_the_one_fuzzed(client: httpx.Client) -> None:
    assert client.get("/openapi.json").json() == create_app().openapi()


@pytest.fixture
def existing_payouts(client: httpx.Client, keys: dict[str, str], broker: redis.Redis) -> list[str]:
    """Payouts for the generated ids to hit now and then, so the routes get past their 404:
    one awaiting approval, one approved for the automatic route, one approved for the manual
    route (its claim needs the node, which is down: 503 node_unavailable)."""
    ids = []
    for key, amount, approve in [("a", 10_000, False), ("b", 20_000, True), ("c", 2_000_000, True)]:
        made = client.post(
            "/v1/payouts",
            json={"destination": REGTEST_P2WPKH, "amount_sats": amount},
            headers=bearer(keys["creator"], **{"Idempotency-Key": f"fuzz-{key}"}),
        )
        assert made.status_code == 201, made.text
        if approve:
            approved = client.post(
                f"/v1/payouts/{made.json()['id']}/approve", headers=bearer(keys["approver"])
            )
            assert approved.status_code == 200, approved.text
        ids.append(made.json()["id"])
    return ids


@pytest.fixture
def existing_transaction(existing_payouts: list[str]) -> str:
    """A broadcast transaction paying the first two payouts, for the txid route to find (its
    200 body is then checked against the schema too); returns its txid."""
    txid = "c0ffee" * 10 + "beef"
    with session_scope() as session:
        tx = Transaction(
            txid=txid, raw_hex="00", fee_sats=420, vsize=211, inputs=[],
            state=TxState.BROADCAST,
        )  # fmt: skip
        session.add(tx)
        session.flush()
        for vout, payout_id in enumerate(existing_payouts[:2]):
            session.execute(
                update(Payout)
                .where(Payout.id == uuid.UUID(payout_id))
                .values(tx_id=tx.id, vout=vout, fee_share_sats=210)
            )
            link_payouts(session, tx.id, [uuid.UUID(payout_id)], {uuid.UUID(payout_id): vout},
                         {uuid.UUID(payout_id): 210})  # fmt: skip
        session.commit()
    return txid


def aim_at_existing_rows(case: schemathesis.Case, payouts: list[str], txid: str) -> None:
    """Swap a generated (valid, so almost surely unknown) payout id for an existing one in
    three cases out of four, and a generated txid for the existing one in one case out of
    two, chosen by the generated value itself so runs stay deterministic."""
    params = case.path_parameters or {}
    if "payout_id" in params:
        try:
            pick = uuid.UUID(str(params["payout_id"])).int % (len(payouts) + 1)
        except ValueError:
            return  # a malformed id is the point of that case
        if pick < len(payouts):
            params["payout_id"] = payouts[pick]
    if "txid" in params:
        generated = str(params["txid"])
        if re.fullmatch(TXID_PATTERN, generated) and int(generated, 16) % 2 == 0:
            params["txid"] = txid


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case,
    fuzz_server: ApiServer,
    keys: dict[str, str],
    existing_payouts: list[str],
    existing_transaction: str,
) -> None:
    aim_at_existing_rows(case, existing_payouts, existing_transaction)

    # The admin key replaces the generated bearer token. A case without an Authorization
    # header means to send none (a negative case "missing Authorization", often with another
    # violation that the app may ignore, such as an unknown query parameter): adding the key
    # back would turn it into a valid request that Schemathesis still judges as negative.
    generated = {name.lower() for name in case.headers or {}}
    auth = bearer(keys["admin"]) if "authorization" in generated else None
    case.call_and_validate(base_url=fuzz_server.url, headers=auth)
