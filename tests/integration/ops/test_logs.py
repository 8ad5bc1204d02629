"""Logs of a full run: one JSON object per line with payout id, transition, txid and worker;
and no secret anywhere: not the RPC password, not an API key, not the Flower password."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from cli.addresses import external_address
from tests.integration.ops.conftest import AUTO_MAX_SATS, OpsSystem

# Processes started through `payouts …`: every line they write must be JSON. (The plain
# `celery … worker` of the fixture prints Celery's own text banner; it is grepped for secrets
# all the same.)
JSON_ONLY = ("api", "payouts-worker", "payouts-beat", "flower")


@pytest.fixture(scope="module")
def full_run(ops: OpsSystem) -> list[str]:
    """Automatic payouts to confirmation, a manual claim and release, refused credentials on
    the API and on Flower, and the ops endpoints. Returns the automatic payout ids."""
    stack = ops.stack
    paid = [stack.create_and_approve(50_000 + i) for i in range(3)]
    ids = [p["id"] for p in paid]
    stack.wait_for_states(ids, {"broadcast"}, timeout=60)
    stack.node.generate_to_address(1, stack.node.get_new_address())
    stack.wait_for_states(ids, {"confirmed"}, timeout=60)

    manual = stack.create_and_approve(AUTO_MAX_SATS + 5)
    with stack.http() as client:
        claimed = client.post(f"/v1/payouts/{manual['id']}/manual/claim",
                              headers=stack.headers("signer"))  # fmt: skip
        assert claimed.status_code == 200, claimed.text
        released = client.post(f"/v1/payouts/{manual['id']}/manual/release",
                               headers=stack.headers("signer"))  # fmt: skip
        assert released.status_code == 200, released.text
        forged = stack.keys["backend"][:-4] + "AAAA"
        refused = client.post(
            "/v1/payouts",
            json={"destination": external_address("regtest"), "amount_sats": 10_000},
            headers={"Authorization": f"Bearer {forged}", "Idempotency-Key": uuid.uuid4().hex},
        )
        assert refused.status_code == 401
        for path in ("/readyz", "/metrics"):
            assert client.get(path).status_code == 200
    assert ops.flower_get("/api/tasks").status_code == 200
    wrong = httpx.get(f"{ops.flower_url}/api/workers", auth=("ops", ops.flower_auth[1] + "x"))
    assert wrong.status_code == 401
    return ids


def _records(ops: OpsSystem, name: str) -> list[dict[str, Any]]:
    [process] = [p for p in ops.processes() if p.name == name]
    lines = process.log_path.read_text(errors="replace").splitlines()
    if name not in JSON_ONLY:
        lines = [line for line in lines if line.startswith("{")]
    records = []
    for number, line in enumerate(lines, 1):
        parsed = json.loads(line)  # a plain-text line fails here, naming nothing secret
        assert isinstance(parsed, dict), f"{name}.log line {number} is not a JSON object"
        records.append(parsed)
    return records


def test_a_full_run_logs_no_secret_in_any_process(ops: OpsSystem, full_run: list[str]) -> None:

    secrets = {
        "the RPC password": ops.rpc_password,
        "the Flower password": ops.flower_auth[1],
        **{f"the {name} API key": secret for name, secret in ops.stack.keys.items()},
    }
    assert all(len(s) >= 12 for s in secrets.values()), "too short to grep for meaningfully"
    for process in ops.processes():
        text = process.log_path.read_text(errors="replace")
        assert text, f"{process.name} wrote no log at all"
        for what, secret in secrets.items():
            assert secret not in text, f"{what} appears in the {process.name} log"


def test_every_line_of_our_processes_is_one_json_object(
    ops: OpsSystem, full_run: list[str]
) -> None:
    for name in JSON_ONLY:
        assert _records(ops, name), f"{name} logged nothing"


def test_transitions_are_logged_with_payout_states_worker_and_txid(
    ops: OpsSystem, full_run: list[str]
) -> None:
    payout_id = full_run[0]
    txid = ops.stack.payout(payout_id)["txid"]
    records = [r for process in ops.processes() for r in _records(ops, process.name)]

    moves = {
        (r["from_state"], r["to_state"]): r
        for r in records
        if r.get("payout_id") == payout_id and "to_state" in r
    }
    assert {("awaiting_approval", "approved"), ("approved", "claimed"), ("claimed", "signed"),
            ("signed", "broadcast"), ("broadcast", "confirmed")} <= set(moves)  # fmt: skip
    assert moves[("approved", "claimed")]["worker"].startswith("worker:")
    assert moves[("claimed", "signed")]["worker"] == moves[("approved", "claimed")]["worker"]
    assert any(r.get("txid") == txid and r.get("outcome") == "sent" for r in records)
    assert any(r.get("txid") == txid and r.get("payout_id") == payout_id for r in records)
