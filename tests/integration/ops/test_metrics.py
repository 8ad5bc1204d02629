"""/metrics counts what two worker processes did: the API process reads counters the workers
wrote to Redis and figures from PostgreSQL, so every number is exact across processes."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from cli.processes import wait_until
from shared.core.models import Transaction
from shared.infra.db import session_scope
from shared.sending.dispatch import enqueue_process_payout
from tests.integration.ops.conftest import AUTO_MAX_SATS, OpsSystem

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
PAYOUTS = 6
DUPLICATES = 3


def scrape(ops: OpsSystem) -> Samples:
    reply = httpx.get(f"{ops.stack.api_url}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def transitions(source: str, target: str) -> dict[str, str]:
    return {"from_state": source, "to_state": target}


def broadcast_attempts_in_db() -> int:
    """Every broadcast attempt is also recorded on its `transactions` row (same DB commit)."""
    with session_scope() as session:
        return int(session.scalar(select(func.sum(Transaction.broadcast_attempts))) or 0)


def test_counts_match_the_payouts_two_workers_broadcast(ops: OpsSystem) -> None:
    before, attempts_before = scrape(ops), broadcast_attempts_in_db()

    payouts = [ops.stack.create_and_approve(30_000 + i) for i in range(PAYOUTS)]
    ops.stack.wait_for_states([p["id"] for p in payouts], {"broadcast"}, timeout=60)

    def outcomes(samples: Samples) -> float:
        return sum(v for (name, _), v in samples.items()
                   if name == "payouts_broadcast_outcomes_total")  # fmt: skip

    # Each worker process counted in Redis what the database recorded: equal once the last
    # sender has committed (a racing resend may still be in flight when the state shows).
    def counters_match_db() -> bool:
        return outcomes(scrape(ops)) - outcomes(before) == (
            broadcast_attempts_in_db() - attempts_before
        )

    wait_until(counters_match_db, 10, "the Redis counters to match the DB's attempts", 0.2)
    after = scrape(ops)
    # One broadcast per transaction (a batch pays several payouts). A resend of a transaction
    # already in the mempool is accepted again (bitcoind re-announces it), so a worker racing
    # the rebroadcast task may count a second "sent" for one transaction.
    txids = {ops.stack.payout(p["id"])["txid"] for p in payouts}
    assert None not in txids
    assert delta(before, after, "payouts_broadcast_outcomes_total", outcome="sent") >= len(txids)
    for source, target in [("approved", "claimed"), ("claimed", "signed"),
                           ("signed", "broadcast")]:  # fmt: skip
        moved = delta(before, after, "payouts_transitions_total", **transitions(source, target))
        assert moved == PAYOUTS, (source, target)
    assert delta(before, after, "payouts_by_state", state="broadcast") == PAYOUTS
    assert delta(before, after, "payouts_approval_to_broadcast_seconds_count") == PAYOUTS
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in after.items()
        if name == "payouts_approval_to_broadcast_seconds_bucket"
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), counts[-1])
    assert counts[-1] == value(after, "payouts_approval_to_broadcast_seconds_count")
    assert delta(before, after, "payouts_approval_to_broadcast_seconds_sum") > 0
    for source in ("database", "redis", "node"):
        assert value(after, "payouts_metrics_source_up", source=source) == 1


def test_each_duplicate_message_for_a_paid_payout_counts_one_claim_conflict(
    ops: OpsSystem,
) -> None:
    payout = ops.stack.create_and_approve(40_000)
    ops.stack.wait_for_states([payout["id"]], {"broadcast"}, timeout=60)
    before = scrape(ops)

    for _ in range(DUPLICATES):
        enqueue_process_payout(payout["id"], coalesce=False)

    def conflicts(samples: Samples) -> float:
        # Two workers may take duplicates at the same moment: the loser of the Redis lock
        # counts lock_not_acquired, the others find nothing to claim (cas_lost).
        return sum(
            delta(before, samples, "payouts_claim_conflicts_total", kind=kind)
            for kind in ("lock_not_acquired", "cas_lost", "lease_lost")
        )

    wait_until(lambda: conflicts(scrape(ops)) >= DUPLICATES, 30, "the duplicates counted", 0.3)
    after = scrape(ops)
    assert conflicts(after) == DUPLICATES
    assert delta(before, after, "payouts_claim_conflicts_total", kind="lease_lost") == 0
    assert delta(before, after, "payouts_broadcast_outcomes_total", outcome="sent") == 0


def test_hot_wallet_balance_is_the_nodes(ops: OpsSystem) -> None:
    samples = scrape(ops)

    assert value(samples, "payouts_hot_wallet_balance_sats") == ops.stack.node.get_balance_sats()


def test_an_approved_manual_payout_waiting_for_a_signer_ages_on_its_route(
    ops: OpsSystem,
) -> None:
    waiting = ops.stack.create_and_approve(AUTO_MAX_SATS + 1)
    assert waiting["processing"] == "manual"

    def aged() -> bool:
        age = value(scrape(ops), "payouts_oldest_unpaid_approval_age_seconds", route="manual")
        return age > 0

    wait_until(aged, 10, "the manual approval to show an age", 0.2)
    samples = scrape(ops)
    assert value(samples, "payouts_by_state", state="approved") >= 1
