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

import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from cli.embedded import free_port
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
                    "include-path-regex": r"^(/readyz|/v1/payouts/\{payout_id\}/manual/.*)$",
                    "checks": {
                        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}
                    },
                },
                {
                    # Input the schema allows but the rules refuse with 422, because JSON
                    # Schema cannot say it: an address's checksum and network, amounts
                    # within PAYOUTS_MAX_PAYOUT_SATS, finite metadata numbers (create); an
                    # opaque cursor (list); a reason without control characters (cancel);
                    # a transaction that pays the payout (submit).
                    "include-name": [
                        "POST /v1/payouts",
                        "GET /v1/payouts",
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


def aim_at_existing_payouts(case: schemathesis.Case, existing: list[str]) -> None:
    """Swap a generated (valid, so almost surely unknown) payout id for an existing one in
    three cases out of four, chosen by the generated id itself so runs stay deterministic."""
    generated = (case.path_parameters or {}).get("payout_id")
    try:
        pick = uuid.UUID(str(generated)).int % (len(existing) + 1)
    except ValueError:
        return  # a malformed id is the point of that case
    if pick < len(existing):
        case.path_parameters["payout_id"] = existing[pick]


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
) -> None:
    aim_at_existing_payouts(case, existing_payouts)

    case.call_and_validate(base_url=fuzz_server.url, headers=bearer(keys["admin"]))
