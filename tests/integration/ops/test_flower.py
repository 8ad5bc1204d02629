"""Flower, started with `payouts flower`, shows the real workers and every
`payouts.process_payout` task with its payout id and state, through its HTTP API."""

from __future__ import annotations

import ast

import httpx

from cli.processes import wait_until
from shared.infra.task_names import PROCESS_PAYOUT
from tests.integration.ops.conftest import OpsSystem

PAYOUTS = 4


def _process_payout_tasks(ops: OpsSystem) -> dict[str, dict[str, object]]:
    reply = ops.flower_get("/api/tasks", taskname=PROCESS_PAYOUT.name)
    assert reply.status_code == 200, reply.text
    tasks: dict[str, dict[str, object]] = reply.json()
    return tasks


def test_flower_lists_both_worker_processes(ops: OpsSystem) -> None:
    reply = ops.flower_get("/api/workers", refresh="1")

    assert reply.status_code == 200
    names = set(reply.json())
    assert any(name.startswith("gated@") for name in names), names
    assert len(names) == len(ops.stack.workers)
    for info in reply.json().values():
        assert PROCESS_PAYOUT.name in info["registered"]


def test_flower_shows_each_payout_task_with_its_id_and_final_state(ops: OpsSystem) -> None:
    payouts = [ops.stack.create_and_approve(15_000 + i) for i in range(PAYOUTS)]
    ids = {p["id"] for p in payouts}
    ops.stack.wait_for_states(list(ids), {"broadcast", "confirmed"}, timeout=60)

    # Approvals share wake-up messages (one batch run pays them all), so not every payout has
    # a task of its own: each task there is must be one of theirs, and end SUCCESS.
    def all_succeeded() -> bool:
        tasks = [t for t in _process_payout_tasks(ops).values() if _payout_id(t) in ids]
        return bool(tasks) and all(t["state"] == "SUCCESS" for t in tasks)

    wait_until(all_succeeded, 30, "Flower to show every process_payout task succeeded", 0.5)
    mine = [t for t in _process_payout_tasks(ops).values() if _payout_id(t) in ids]
    workers = {str(t["worker"]) for t in mine}
    assert workers <= set(ops.flower_get("/api/workers").json())
    for task in mine:
        assert task["name"] == PROCESS_PAYOUT.name
        assert ast.literal_eval(str(task["kwargs"])) == {}  # the id only, nothing else


def test_flower_refuses_requests_without_the_password(ops: OpsSystem) -> None:
    anonymous = httpx.get(f"{ops.flower_url}/api/workers", timeout=10)
    wrong = httpx.get(f"{ops.flower_url}/api/workers", auth=(ops.flower_auth[0], "nope"),
                      timeout=10)  # fmt: skip

    assert (anonymous.status_code, wrong.status_code) == (401, 401)


def test_flower_answers_never_carry_the_node_or_flower_secrets(ops: OpsSystem) -> None:
    texts = [ops.flower_get(path, refresh="1").text for path in ("/api/workers", "/api/tasks")]

    for text in texts:
        assert ops.rpc_password not in text
        assert ops.flower_auth[1] not in text


def _payout_id(task: dict[str, object]) -> str:
    args = ast.literal_eval(str(task["args"]))  # Celery's repr of the positional arguments
    return str(args[0]) if args else ""
