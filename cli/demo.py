"""`payouts demo`: the whole flow on embedded defaults, printed as it happens.

SQLite file database, the machine's Redis (or an embedded one), the simulated regtest node
in-process, the real API over HTTP and real Celery worker processes. It shows automatic
payouts approved and paid once, duplicate messages doing nothing, a manual claim of a
worker-claimed payout refused, the manual PSBT route paying once, and confirmations.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from cli.addresses import external_address
from cli.embedded import choose_redis, free_port
from cli.funding import fund_wallet
from cli.processes import (
    ManagedProcess,
    api_argv,
    beat_argv,
    wait_for_http,
    wait_for_worker_ready,
    wait_until,
    worker_argv,
)

# Above this a payout takes the manual route in the demo (the default limit is higher).
DEMO_AUTO_MAX_SATS = 1_000_000
DEMO_MIN_CONFIRMATIONS = 3
FUNDING_COINS = 30
FUNDING_COIN_SATS = 50_000_000


def say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(payouts: int = 5, workers: int = 2) -> int:
    if payouts < 1 or workers < 1:
        say("demo: --payouts and --workers must be at least 1")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="payouts-demo-"))
    try:
        with ExitStack() as stack:
            return _run(stack, workdir, payouts, workers)
    except Exception as exc:  # print a readable failure, with where the logs are
        say(f"\ndemo FAILED: {exc}\nlogs: {workdir}")
        return 1


def _run(stack: ExitStack, workdir: Path, n_payouts: int, n_workers: int) -> int:
    from cli.regtest_node import RegtestNode
    from devnode.server import start_devnode

    say(f"== Payout Processor demo (work dir {workdir})")
    redis_url, embedded = choose_redis(workdir)
    if embedded:
        stack.callback(embedded.stop)
    say(f"redis: {redis_url}{' (embedded)' if embedded else ''}")
    devnode = stack.enter_context(start_devnode(host="127.0.0.1", port=0))
    node = RegtestNode(devnode.wallet_url)
    fund_wallet(node, FUNDING_COINS, FUNDING_COIN_SATS)
    say(
        f"simulated regtest node: {devnode.wallet_url.split('@')[-1]}  "
        f"hot wallet balance {node.get_balance_sats() / 1e8:.8f} BTC"
    )

    env = _environment(workdir, redis_url, devnode.wallet_url)
    os.environ.update(env)  # this process migrates and mints keys with the same settings
    from cli.caches import reset_process_caches

    reset_process_caches()
    from shared.infra.migrate import upgrade

    upgrade()
    keys = _mint_keys()
    say("database: SQLite, migrated; API keys minted for backend, approver, two signers")

    port = free_port()
    api = ManagedProcess("api", api_argv(port), env, workdir)
    stack.callback(api.stop)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(api, f"{base}/healthz")
    procs = [
        ManagedProcess(f"worker{i}", worker_argv(f"demo-w{i}@%h"), env, workdir)
        for i in range(1, n_workers + 1)
    ]
    for proc in procs:
        stack.callback(proc.stop)
    beat = ManagedProcess("beat", beat_argv(workdir / "beat-schedule"), env, workdir)
    stack.callback(beat.stop)
    for proc in procs:
        wait_for_worker_ready(proc)
    say(f"api at {base}; {n_workers} Celery worker processes and beat running\n")

    http = stack.enter_context(httpx.Client(base_url=base, timeout=30))
    flow = DemoFlow(http, keys, node, redis_url)
    ok = flow.run(n_payouts)
    say(f"\nlogs of every process: {workdir}")
    return 0 if ok else 1


def _environment(workdir: Path, redis_url: str, node_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    env.update(
        PAYOUTS_DATABASE_URL=f"sqlite:///{workdir / 'demo.db'}",
        PAYOUTS_REDIS_URL=redis_url,
        PAYOUTS_BITCOIND_URL=node_url,
        PAYOUTS_NETWORK="regtest",
        PAYOUTS_AUTO_MAX_SATS=str(DEMO_AUTO_MAX_SATS),
        PAYOUTS_MIN_CONFIRMATIONS=str(DEMO_MIN_CONFIRMATIONS),
        PAYOUTS_MAINTENANCE_INTERVAL_SECONDS="1",
        PAYOUTS_SWEEP_AFTER_SECONDS="5",
        PAYOUTS_LOG_JSON="true",
    )
    return env


def _mint_keys() -> dict[str, str]:
    from shared.infra.db import session_scope
    from shared.intake.api_keys import create_api_key

    wanted = {
        "backend": "payouts:create,payouts:read",
        "approver": "payouts:approve,payouts:read",
        "signer": "payouts:sign,payouts:read",
        "signer2": "payouts:sign,payouts:read",
    }
    keys = {}
    with session_scope() as session:
        for name, scopes in wanted.items():
            keys[name] = create_api_key(session, f"demo-{name}", scopes)
    return keys


CONSUME_TIMEOUT_SECONDS = 60


def wait_until_consumed(broker_url: str) -> bool:
    """True once the payouts queue is empty and no delivered message is still unacked.

    kombu's Redis transport keeps waiting messages in a list named after the queue and
    delivered-but-unacknowledged ones in the `unacked` hash; with acks_late a message leaves
    that hash only when its task has finished.
    """
    import redis

    from shared.infra.celery_config import PAYOUTS_QUEUE

    client = redis.Redis.from_url(broker_url)
    try:
        deadline = time.monotonic() + CONSUME_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if client.llen(PAYOUTS_QUEUE) == 0 and client.hlen("unacked") == 0:
                return True
            time.sleep(0.1)
        return False
    finally:
        client.close()


class DemoFlow:
    def __init__(
        self, http: httpx.Client, keys: dict[str, str], node: Any, broker_url: str
    ) -> None:
        self.broker_url = broker_url
        self.http = http
        self.keys = keys
        self.node = node
        self.expected: dict[str, tuple[str, int]] = {}

    def _as(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def create(self, amount: int, note: str) -> dict[str, Any]:
        destination = external_address("regtest")
        reply = self.http.post(
            "/v1/payouts",
            json={"destination": destination, "amount_sats": amount, "metadata": {"note": note}},
            headers={**self._as("backend"), "Idempotency-Key": f"demo-{note}"},
        )
        reply.raise_for_status()
        payout: dict[str, Any] = reply.json()
        self.expected[payout["id"]] = (destination, amount)
        return payout

    def get(self, payout_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/v1/payouts/{payout_id}", headers=self._as("backend"))
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def show_transaction(self, txid: str) -> None:
        reply = self.http.get(f"/v1/transactions/{txid}", headers=self._as("backend"))
        if reply.status_code != 200:
            say(f"   GET /v1/transactions/{txid}: HTTP {reply.status_code}")
            return
        tx = reply.json()
        count = len(tx["payouts"])
        per_payout = tx["vsize"] / count if count and tx.get("vsize") else float("nan")
        say(f"   transaction {txid}: {count} payouts, {tx['vsize']} vB ({per_payout:.1f} vB "
            f"per payout), fee {tx['fee_sats']} sats at {tx['fee_rate_sat_vb']} sat/vB"
            )  # fmt: skip

    def bump(self, txid: str, autos: list[dict[str, Any]]) -> bool:
        """Fees rose: the operator bumps the batch (beat does the same by itself once a
        transaction is BUMP_AFTER_BLOCKS blocks old and below the node's estimate)."""
        old = self.http.get(f"/v1/transactions/{txid}", headers=self._as("backend")).json()
        rate = int(old["fee_rate_sat_vb"]) + 8
        say(f"-- 5. fees rose: the approver bumps {txid} to {rate} sat/vB "
            "(POST /v1/transactions/{txid}/bump)")  # fmt: skip
        reply = self.http.post(f"/v1/transactions/{txid}/bump", json={"fee_rate_sat_vb": rate},
                               headers=self._as("approver"))  # fmt: skip
        if reply.status_code != 202:
            say(f"   HTTP {reply.status_code}: {reply.text}")
            return False
        done = reply.json()
        say(f"   HTTP 202 {done['method']}: {done['replaced_txid']} ({done['old_fee_rate_sat_vb']} "
            f"sat/vB) replaced by {done['new_txid']} ({done['new_fee_rate_sat_vb']} sat/vB), "
            f"stored before it was broadcast: {done['broadcast']}")  # fmt: skip
        members = [p for p in autos if self.get(p["id"])["txid"] == done["new_txid"]]
        view = self.get(members[0]["id"]) if members else {}
        say(f"   {len(members)} payouts now name the new version; transaction_versions "
            f"{view.get('transaction_versions')}")  # fmt: skip
        again = self.http.post(f"/v1/transactions/{done['replaced_txid']}/bump",
                               json={"fee_rate_sat_vb": rate + 5},
                               headers=self._as("approver"))  # fmt: skip
        error = again.json().get("error", {})
        say(f"   bumping the old version again: HTTP {again.status_code} {error.get('code')}")
        return bool(members) and again.status_code == 409

    def wait_state(self, payout_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.get(payout_id))
            return seen["state"] in states

        wait_until(reached, timeout, f"payout {payout_id} to reach {sorted(states)}", 0.05)
        return seen

    def run(self, n_payouts: int) -> bool:
        say(f"-- 1. backend creates {n_payouts} automatic payouts (Idempotency-Key per request)")
        autos = [self.create(10_000 * (i + 1), f"auto-{i}") for i in range(n_payouts)]
        replay = self.http.post(
            "/v1/payouts",
            json={
                "destination": autos[0]["destination"],
                "amount_sats": autos[0]["amount_sats"],
                "metadata": {"note": "auto-0"},
            },
            headers={**self._as("backend"), "Idempotency-Key": "demo-auto-0"},
        )
        say(
            f"   replaying the first request: HTTP {replay.status_code}, same id: "
            f"{replay.json().get('id') == autos[0]['id']}"
        )

        say("-- 2. approver approves them; each approval publishes payouts.process_payout")
        for payout in autos:
            reply = self.http.post(
                f"/v1/payouts/{payout['id']}/approve", headers=self._as("approver")
            )
            reply.raise_for_status()
            say(
                f"   {payout['id']}  {payout['amount_sats']:>7} sats  processing="
                f"{reply.json()['processing']}"
            )

        first = autos[0]["id"]
        held = self.wait_state(first, {"claimed", "signed", "broadcast", "confirmed"})
        say(
            f"-- 3. a human tries to claim {first} for manual signing after {held['claimed_by']} "
            "claimed it"
        )
        refused = self.http.post(f"/v1/payouts/{first}/manual/claim", headers=self._as("signer"))
        error = refused.json().get("error", {})
        say(f"   HTTP {refused.status_code} {error.get('code')}: {error.get('message')}")
        refused_ok = refused.status_code == 409 and error.get("code") == "claimed_by_worker"

        say("-- 4. workers pay each automatic payout once, batched: one transaction, many payouts")
        txids: dict[str, int] = {}
        for payout in autos:
            done = self.wait_state(payout["id"], {"broadcast", "confirmed"})
            say(f"   {payout['id']}  {done['state']:<9} txid {done['txid']} output "
                f"{done.get('vout')} fee share {done.get('fee_share_sats')} sats")  # fmt: skip
            txids[done["txid"]] = txids.get(done["txid"], 0) + 1
        for txid in txids:
            self.show_transaction(txid)

        from shared.sending.dispatch import enqueue_process_payout

        before = {p["id"]: self.get(p["id"])["txid"] for p in autos}
        for payout in autos:
            for _ in range(3):
                enqueue_process_payout(payout["id"], coalesce=False)
        consumed = wait_until_consumed(self.broker_url)
        unchanged = all(self.get(pid)["txid"] == txid for pid, txid in before.items())
        if consumed:
            say("   published 3 duplicate messages per payout; all consumed, every txid "
                f"unchanged: {unchanged}")  # fmt: skip
        else:
            say("   published 3 duplicate messages per payout; NOT all consumed within "
                f"{CONSUME_TIMEOUT_SECONDS} s (txids so far unchanged: {unchanged})")  # fmt: skip
        unchanged = unchanged and consumed

        bumped_ok = self.bump(next(iter(txids)), autos)

        say(f"-- 6. a payout above the automatic limit ({DEMO_AUTO_MAX_SATS} sats) goes manual")
        manual = self.create(2_000_000, "manual-0")
        approved = self.http.post(
            f"/v1/payouts/{manual['id']}/approve", headers=self._as("approver")
        )
        body = approved.json()
        say(f"   approve: processing={body['processing']} claim_url={body.get('claim_url')}")
        claim = self.http.post(
            f"/v1/payouts/{manual['id']}/manual/claim", headers=self._as("signer")
        )
        claim.raise_for_status()
        psbt = claim.json()["psbt"]
        say(
            f"   signer claimed it: unsigned PSBT ({len(psbt)} chars), expires "
            f"{claim.json()['expires_at']}"
        )
        again = self.http.post(
            f"/v1/payouts/{manual['id']}/manual/claim", headers=self._as("signer2")
        )
        refusal = again.json().get("error", {})
        say(
            f"   a second signer tries to claim it: HTTP {again.status_code} "
            f"{refusal.get('code')}: {refusal.get('message')}"
        )
        # The node's wallet stands in for the external signer (a hardware wallet in practice).
        signed_psbt, complete = self.node.wallet_process_psbt(psbt)
        submit = self.http.post(
            f"/v1/payouts/{manual['id']}/manual/submit",
            json={"psbt": signed_psbt},
            headers=self._as("signer"),
        )
        submit.raise_for_status()
        say(
            f"   signed externally (complete={complete}) and submitted: {submit.json()['state']} "
            f"txid {submit.json()['txid']}"
        )

        say(f"-- 7. mining {DEMO_MIN_CONFIRMATIONS} blocks; beat tracks confirmations")
        self.node.generate_to_address(DEMO_MIN_CONFIRMATIONS, self.node.get_new_address())
        for payout_id in self.expected:
            self.wait_state(payout_id, {"confirmed"}, timeout=60)
        say(f"   all {len(self.expected)} payouts confirmed")

        say("-- 8. the node's ledger (not our database): outputs per payout destination")
        from cli.ledger import judge

        verdict = judge(self.node, self.expected)
        say(
            f"   paid once: {len(verdict.paid_once)}  paid twice: {len(verdict.paid_twice)}  "
            f"unpaid: {len(verdict.unpaid)}  stray outputs: {len(verdict.stray_outputs)}"
        )
        ok = (refused_ok and unchanged and bumped_ok
              and len(verdict.paid_once) == len(self.expected))  # fmt: skip
        say("RESULT: " + ("every payout paid exactly once" if ok else "UNEXPECTED, see above"))
        return ok


if __name__ == "__main__":
    sys.exit(run_demo())
