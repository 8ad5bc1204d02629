"""Load that keeps flowing while faults are injected: a paced payout producer and a miner.

The producer talks to the API the way a careful client does under faults: on a 5xx or a
connection error it retries with the same Idempotency-Key, and a 409 on approve after a lost
reply is checked against the payout's state rather than treated as an error.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from cli.addresses import external_address
from cli.regtest_node import RegtestNode
from tests.chaos.oracle import PayoutRef
from tests.support.stack import Stack

# A request that keeps failing this long means the system is down, not blipping.
REQUEST_DEADLINE_SECONDS = 90
RETRY_PAUSE_SECONDS = 0.3


class Stopped(Exception):
    """The producer was stopped (the test is over) while a request was being retried."""


def _retrying(
    send: Callable[[], httpx.Response], what: str, stopped: threading.Event
) -> httpx.Response:
    deadline = time.monotonic() + REQUEST_DEADLINE_SECONDS
    while True:
        if stopped.is_set():
            raise Stopped(what)
        try:
            reply = send()
            if reply.status_code < 500:
                return reply
            problem = f"{reply.status_code} {reply.text[:200]}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} kept failing for {REQUEST_DEADLINE_SECONDS}s: {problem}")
        time.sleep(RETRY_PAUSE_SECONDS)


def create_and_approve(
    stack: Stack, client: httpx.Client, amount_sats: int, stopped: threading.Event
) -> PayoutRef:
    destination = external_address("regtest")
    body = {"destination": destination, "amount_sats": amount_sats}
    create_headers = stack.headers("backend", **{"Idempotency-Key": uuid.uuid4().hex})
    made = _retrying(lambda: client.post("/v1/payouts", json=body, headers=create_headers),
                     "create payout", stopped)  # fmt: skip
    assert made.status_code in (200, 201), made.text
    payout_id = made.json()["id"]
    approved = _retrying(
        lambda: client.post(f"/v1/payouts/{payout_id}/approve", headers=stack.headers("approver")),
        "approve payout",
        stopped,
    )
    if approved.status_code == 200:
        route = approved.json()["route"]
    else:
        # An earlier attempt approved it and only the reply was lost.
        current = _retrying(
            lambda: client.get(f"/v1/payouts/{payout_id}", headers=stack.headers("backend")),
            "read payout",
            stopped,
        ).json()
        assert approved.status_code == 409 and current["state"] != "awaiting_approval", (
            approved.text
        )
        route = current["route"]
    return PayoutRef(payout_id, destination, amount_sats, route)


class Producer:
    """Creates and approves payouts from a few threads, spread evenly over `duration`
    seconds, so the faults injected meanwhile hit payouts in every stage."""

    THREADS = 4

    def __init__(
        self, stack: Stack, amounts: list[int], duration: float, threads: int = THREADS
    ) -> None:
        self.stack = stack
        self.amounts = amounts
        self.duration = duration
        self.payouts: list[PayoutRef] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="producer")
        self._started = time.monotonic()
        self._futures = [self._pool.submit(self._one, i, a) for i, a in enumerate(amounts)]

    def _one(self, index: int, amount_sats: int) -> None:
        due = self._started + self.duration * index / max(1, len(self.amounts))
        if self._stopped.wait(max(0.0, due - time.monotonic())):
            return
        payout = create_and_approve(self.stack, self.stack.client, amount_sats, self._stopped)
        with self._lock:
            self.payouts.append(payout)

    def snapshot(self) -> list[PayoutRef]:
        with self._lock:
            return list(self.payouts)

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def join(self) -> list[PayoutRef]:
        for future in self._futures:
            future.result()  # re-raises a producer failure in the test
        self._pool.shutdown()
        return self.snapshot()

    def stop(self) -> None:
        """Abandon what is not created yet (a failed test must not keep feeding a dead API)."""
        self._stopped.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class Miner:
    """Mines a block every `interval` seconds while running (devnode_mine is exempt from
    injected faults, so the chain keeps moving whatever the test does to the node). The
    coinbase goes to `address`, else to a new address of the hot wallet."""

    def __init__(self, node: RegtestNode, interval: float, address: str | None = None) -> None:
        self.node = node
        self.interval = interval
        self.address = address
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="miner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            if self._running.is_set():
                self.mine_one()

    def mine_one(self) -> str:
        return str(self.node.call("devnode_mine", 1, self.address)[0])

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)
