"""A manual signer that tries to claim every payout, over and over, while workers run.

It is the BTCPay #5913 failure driven as hard as we can: every automatic payout is also
offered to a human signer, repeatedly, at every stage of its life. Whenever a claim is
granted (only possible on the manual route) the signer signs the PSBT with the wallet and
submits it, as a human with an external signer would.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.chaos.oracle import PayoutRef
from tests.support.stack import Stack


class ManualHammer:
    def __init__(
        self, stack: Stack, payouts: Callable[[], list[PayoutRef]], keys: list[str]
    ) -> None:
        self.stack = stack
        self.payouts = payouts
        self.keys = keys
        self.claims = 0
        # payout id -> Counter of (status, error code) seen on its claim attempts
        self.replies: dict[str, Counter[tuple[int, str]]] = defaultdict(Counter)
        self.winners: dict[str, list[str]] = defaultdict(list)  # payout id -> winning keys
        self.submitted: dict[str, list[int]] = defaultdict(list)  # payout id -> submit statuses
        self.rounds = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(len(keys), thread_name_prefix="hammer")
        self._futures = [self._pool.submit(self._loop, n, key) for n, key in enumerate(keys)]

    def _loop(self, index: int, key: str) -> None:
        with self.stack.http() as client:
            while not self._stop.is_set():
                targets = self.payouts()
                # Each thread walks the payouts in its own order, so threads collide on the
                # same payout at different moments of its life.
                targets = targets[index:] + targets[:index]
                for payout in targets:
                    if self._stop.is_set():
                        return
                    self._hammer_once(client, payout, key)
                if index == 0:
                    with self._lock:
                        self.rounds += 1

    def _hammer_once(self, client: httpx.Client, payout: PayoutRef, key: str) -> None:
        reply = client.post(
            f"/v1/payouts/{payout.id}/manual/claim", headers=self.stack.headers(key)
        )
        code = reply.json().get("error", {}).get("code", "") if reply.status_code != 200 else ""
        with self._lock:
            self.claims += 1
            self.replies[payout.id][(reply.status_code, code)] += 1
            if reply.status_code == 200:
                self.winners[payout.id].append(key)
        if reply.status_code == 200:
            self._sign_and_submit(client, payout, key, reply.json()["psbt"])

    def _sign_and_submit(
        self, client: httpx.Client, payout: PayoutRef, key: str, psbt: str
    ) -> None:
        signed, complete = self.stack.node.wallet_process_psbt(psbt)
        assert complete, "the hot wallet could not sign the PSBT it funded"
        reply = client.post(
            f"/v1/payouts/{payout.id}/manual/submit",
            json={"psbt": signed},
            headers=self.stack.headers(key),
        )
        with self._lock:
            self.submitted[payout.id].append(reply.status_code)

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result()  # re-raises a hammer thread's failure in the test
        self._pool.shutdown()
