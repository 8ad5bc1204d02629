"""shared/metrics: shared counters in Redis (fakeredis), figures from the database (SQLite),
the hot-wallet balance from the node, and a scrape that survives any one source failing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from shared.core.models import PayoutEvent, PayoutState, Route, Transaction
from shared.infra.db import session_scope
from shared.node.errors import NodeUnavailable
from shared.ops import metrics
from shared.ops.metrics import ClaimConflict, PayoutsCollector
from tests.unit.shared.factories import make_payout, use_app_database

S = PayoutState
NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
DEAD_REDIS = "redis://127.0.0.1:1/0"  # port 1: nothing listens


def scrape(collector: PayoutsCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the text exposition, as Prometheus reads it."""
    registry = metrics.CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class FakeNode:
    """Stands in for NodeClient: a balance, or NodeUnavailable when `down`."""

    balance = 123_456
    down = False

    def __init__(self, url: str, **_: object) -> None:
        self.url = url

    def get_balance_sats(self) -> int:
        if FakeNode.down:
            raise NodeUnavailable("getbalance: connection refused", None)
        return FakeNode.balance


@pytest.fixture
def counters(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    client = fakeredis.FakeRedis()
    monkeypatch.setattr(metrics, "counter_redis", lambda: client)
    return client


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_app_database(monkeypatch, tmp_path / "metrics.db")
    yield


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> type[FakeNode]:
    FakeNode.balance, FakeNode.down = 123_456, False
    monkeypatch.setattr(metrics, "NodeClient", FakeNode)
    return FakeNode


def add_event(session: Session, payout_id: uuid.UUID, source: str | None, target: str,
              at: datetime) -> None:  # fmt: skip
    session.add(PayoutEvent(payout_id=payout_id, from_state=source, to_state=target,
                            actor="test", at=at))  # fmt: skip
    session.commit()


def broadcast_after(session: Session, seconds: float) -> None:
    """A payout approved at NOW and broadcast `seconds` later."""
    payout = make_payout(session, state=S.BROADCAST, approved_at=NOW, route=Route.AUTOMATIC)
    add_event(session, payout.id, S.SIGNED, S.BROADCAST, NOW + timedelta(seconds=seconds))


def add_transaction(
    session: Session, payouts: int, vsize: int | None, created_at: datetime = NOW
) -> None:
    """A transaction created at `created_at` paying `payouts` payouts."""
    tx = Transaction(
        txid=uuid.uuid4().hex * 2, raw_hex="00", fee_sats=1_000, vsize=vsize, inputs=[],
        created_at=created_at,
    )  # fmt: skip
    session.add(tx)
    session.commit()
    for vout in range(payouts):
        make_payout(session, state=S.BROADCAST, tx_id=tx.id, vout=vout, fee_share_sats=1)


class TestRecording:
    def test_each_conflict_kind_is_counted_in_the_shared_hash(
        self, counters: fakeredis.FakeRedis
    ) -> None:
        metrics.record_claim_conflict(ClaimConflict.CAS_LOST)
        metrics.record_claim_conflict(ClaimConflict.CAS_LOST)
        metrics.record_claim_conflict(ClaimConflict.LEASE_LOST)

        stored = counters.hgetall(metrics.CLAIM_CONFLICTS_KEY)
        assert stored == {b"cas_lost": b"2", b"lease_lost": b"1"}

    def test_an_explicit_client_is_used_instead_of_the_settings_one(self) -> None:
        own = fakeredis.FakeRedis()

        metrics.record_broadcast_outcome("sent", own)

        assert own.hgetall(metrics.BROADCAST_OUTCOMES_KEY) == {b"sent": b"1"}

    def test_an_unreachable_redis_never_raises_into_the_payout_path(self) -> None:
        dead = metrics._redis_for(DEAD_REDIS)  # the client production builds, aimed at nothing
        started = time.monotonic()

        metrics.record_claim_conflict(ClaimConflict.LOCK_NOT_ACQUIRED, dead)
        metrics.record_broadcast_outcome("sent", dead)

        # Generous bound: a retrying client (redis-py's default) takes seconds here.
        assert time.monotonic() - started < 2


class TestCounters:
    def test_conflicts_show_every_kind_and_outcomes_show_what_happened(
        self, counters: fakeredis.FakeRedis, db: None, node: type[FakeNode]
    ) -> None:
        metrics.record_claim_conflict(ClaimConflict.LOCK_NOT_ACQUIRED)
        for _ in range(3):
            metrics.record_broadcast_outcome("sent")
        metrics.record_broadcast_outcome("unknown")

        samples = scrape(PayoutsCollector())

        assert samples[("payouts_claim_conflicts_total", (("kind", "lock_not_acquired"),))] == 1
        assert samples[("payouts_claim_conflicts_total", (("kind", "cas_lost"),))] == 0
        assert samples[("payouts_claim_conflicts_total", (("kind", "lease_lost"),))] == 0
        assert samples[("payouts_broadcast_outcomes_total", (("outcome", "sent"),))] == 3
        assert samples[("payouts_broadcast_outcomes_total", (("outcome", "unknown"),))] == 1

    def test_fee_bumps_are_counted_by_method_and_both_methods_always_shown(
        self, counters: fakeredis.FakeRedis, db: None, node: type[FakeNode]
    ) -> None:
        metrics.record_fee_bump("cpfp")
        metrics.record_fee_bump("cpfp")

        samples = scrape(PayoutsCollector())

        assert samples[("payouts_fee_bumps_total", (("method", "cpfp"),))] == 2
        assert samples[("payouts_fee_bumps_total", (("method", "rbf"),))] == 0


class TestDatabaseFigures:
    def test_every_state_is_reported_with_its_count(self, db: None) -> None:
        with session_scope() as session:
            make_payout(session, state=S.APPROVED)
            make_payout(session, state=S.APPROVED)
            make_payout(session, state=S.CONFIRMED)

        figures = metrics.read_database_figures(NOW.timestamp())

        assert figures.by_state == {s.value: 0 for s in S} | {"approved": 2, "confirmed": 1}

    def test_transitions_are_counted_from_the_audit_trail(self, db: None) -> None:
        with session_scope() as session:
            payout = make_payout(session)
            add_event(session, payout.id, None, S.AWAITING_APPROVAL, NOW)
            add_event(session, payout.id, S.AWAITING_APPROVAL, S.APPROVED, NOW)
            other = make_payout(session)
            add_event(session, other.id, S.AWAITING_APPROVAL, S.APPROVED, NOW)

        figures = metrics.read_database_figures(NOW.timestamp())

        assert figures.transitions == {
            ("none", "awaiting_approval"): 1,
            ("awaiting_approval", "approved"): 2,
        }

    def test_latency_histogram_buckets_are_cumulative_with_the_sum(self, db: None) -> None:
        with session_scope() as session:
            for seconds in (0.5, 3, 45, 7200):
                broadcast_after(session, seconds)

        figures = metrics.read_database_figures(NOW.timestamp())

        buckets = dict(figures.latency_buckets)
        assert (buckets[1.0], buckets[5.0], buckets[60.0], buckets[3600.0]) == (1, 2, 3, 3)
        assert buckets[4 * 3600.0] == 4 and buckets[float("inf")] == 4
        assert figures.latency_sum == pytest.approx(0.5 + 3 + 45 + 7200, abs=0.01)

    def test_clock_skew_counts_as_zero_latency_not_negative(self, db: None) -> None:
        with session_scope() as session:
            broadcast_after(session, -30)

        figures = metrics.read_database_figures(NOW.timestamp())

        assert dict(figures.latency_buckets)[1.0] == 1
        assert figures.latency_sum == pytest.approx(0, abs=0.01)

    def test_oldest_unpaid_approval_is_per_route_and_ignores_paid_ones(self, db: None) -> None:
        hour = timedelta(hours=1)
        with session_scope() as session:
            make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC, approved_at=NOW - hour)
            make_payout(session, state=S.SIGNED, route=Route.AUTOMATIC, approved_at=NOW - 2 * hour)
            make_payout(session, state=S.CLAIMED, route=Route.MANUAL, approved_at=NOW - 3 * hour)
            make_payout(
                session, state=S.BROADCAST, route=Route.AUTOMATIC, approved_at=NOW - 9 * hour
            )

        figures = metrics.read_database_figures(NOW.timestamp())

        ages = {route: round(age) for route, age in figures.oldest_unpaid_age.items()}
        assert ages == {"automatic": 7200, "manual": 10800}

    def test_no_unpaid_approvals_reads_zero(self, db: None) -> None:
        figures = metrics.read_database_figures(NOW.timestamp())

        assert figures.oldest_unpaid_age == {"automatic": 0.0, "manual": 0.0}


class TestTransactionSizes:
    def test_batch_size_counts_payouts_per_transaction_cumulatively(self, db: None) -> None:
        with session_scope() as session:
            for payouts in (1, 1, 3, 100, 250):
                add_transaction(session, payouts, vsize=1_000, created_at=NOW - timedelta(hours=1))

        figures = metrics.read_database_figures(NOW.timestamp())

        buckets = dict(figures.batch_size.buckets)
        assert (buckets[1.0], buckets[2.0], buckets[5.0], buckets[100.0]) == (2, 2, 3, 4)
        assert buckets[200.0] == 4 and buckets[500.0] == 5 and buckets[float("inf")] == 5
        assert figures.batch_size.total == 1 + 1 + 3 + 100 + 250

    def test_vbytes_per_payout_divides_each_transactions_vsize_by_its_payouts(
        self, db: None
    ) -> None:
        with session_scope() as session:
            add_transaction(session, 1, vsize=141)  # one payout with change
            add_transaction(session, 3, vsize=300)  # 100 each
            add_transaction(session, 100, vsize=3_400)  # 34 each
            add_transaction(session, 7, vsize=None)  # stored before migration 0003

        figures = metrics.read_database_figures(NOW.timestamp())

        buckets = dict(figures.vbytes_per_payout.buckets)
        assert (buckets[35.0], buckets[100.0], buckets[150.0]) == (1, 2, 3)
        assert buckets[float("inf")] == 3  # the row without a vsize is not a sample
        assert figures.vbytes_per_payout.total == pytest.approx(141 + 100 + 34)
        assert dict(figures.batch_size.buckets)[float("inf")] == 4  # but it has a batch size

    def test_only_the_last_24_hours_count(self, db: None) -> None:
        with session_scope() as session:
            add_transaction(session, 2, vsize=200, created_at=NOW - timedelta(hours=23, minutes=59))
            add_transaction(session, 9, vsize=900, created_at=NOW - timedelta(hours=24, minutes=1))
            add_transaction(session, 50, vsize=2_000, created_at=NOW - timedelta(days=30))

        figures = metrics.read_database_figures(NOW.timestamp())

        assert dict(figures.batch_size.buckets)[float("inf")] == 1
        assert figures.batch_size.total == 2
        assert figures.vbytes_per_payout.total == pytest.approx(100)

    def test_a_transaction_that_pays_no_payout_any_more_is_left_out(self, db: None) -> None:
        # A dead batch whose payouts were re-queued: they no longer point at it.
        with session_scope() as session:
            add_transaction(session, 0, vsize=500)

        figures = metrics.read_database_figures(NOW.timestamp())

        assert dict(figures.batch_size.buckets)[float("inf")] == 0
        assert dict(figures.vbytes_per_payout.buckets)[float("inf")] == 0

    def test_no_transactions_read_as_empty_histograms(self, db: None) -> None:
        figures = metrics.read_database_figures(NOW.timestamp())

        assert all(count == 0 for _, count in figures.batch_size.buckets)
        assert all(count == 0 for _, count in figures.vbytes_per_payout.buckets)
        assert (figures.batch_size.total, figures.vbytes_per_payout.total) == (0, 0)
        assert [b for b, _ in figures.batch_size.buckets][-1] == float("inf")


class TestScrape:
    def test_all_families_are_exposed_with_every_source_up(
        self, counters: fakeredis.FakeRedis, db: None, node: type[FakeNode]
    ) -> None:
        with session_scope() as session:
            broadcast_after(session, 4)

        samples = scrape(PayoutsCollector())

        names = {name for name, _ in samples}
        assert {
            "payouts_by_state",
            "payouts_transitions_total",
            "payouts_claim_conflicts_total",
            "payouts_approval_to_broadcast_seconds_bucket",
            "payouts_approval_to_broadcast_seconds_count",
            "payouts_approval_to_broadcast_seconds_sum",
            "payouts_oldest_unpaid_approval_age_seconds",
            "payouts_hot_wallet_balance_sats",
            "payouts_batch_size_bucket",
            "payouts_batch_size_count",
            "payouts_batch_size_sum",
            "payouts_tx_vbytes_per_payout_bucket",
            "payouts_tx_vbytes_per_payout_count",
            "payouts_tx_vbytes_per_payout_sum",
        } <= names
        assert samples[("payouts_by_state", (("state", "broadcast"),))] == 1
        assert samples[("payouts_approval_to_broadcast_seconds_count", ())] == 1
        assert samples[("payouts_hot_wallet_balance_sats", ())] == 123_456
        for source in ("database", "redis", "node"):
            assert samples[("payouts_metrics_source_up", (("source", source),))] == 1

    def test_the_transaction_size_histograms_as_prometheus_reads_them(
        self, counters: fakeredis.FakeRedis, db: None, node: type[FakeNode]
    ) -> None:
        with session_scope() as session:
            add_transaction(session, 3, vsize=300, created_at=datetime.now(UTC))

        samples = scrape(PayoutsCollector())

        assert samples[("payouts_batch_size_count", ())] == 1
        assert samples[("payouts_batch_size_sum", ())] == 3
        assert samples[("payouts_batch_size_bucket", (("le", "2.0"),))] == 0
        assert samples[("payouts_batch_size_bucket", (("le", "5.0"),))] == 1
        assert samples[("payouts_tx_vbytes_per_payout_count", ())] == 1
        assert samples[("payouts_tx_vbytes_per_payout_sum", ())] == pytest.approx(100)
        assert samples[("payouts_tx_vbytes_per_payout_bucket", (("le", "80.0"),))] == 0
        assert samples[("payouts_tx_vbytes_per_payout_bucket", (("le", "100.0"),))] == 1
        assert samples[("payouts_tx_vbytes_per_payout_bucket", (("le", "+Inf"),))] == 1

    def test_a_node_outage_serves_the_last_balance_and_marks_the_node_down(
        self, counters: fakeredis.FakeRedis, db: None, node: type[FakeNode]
    ) -> None:
        collector = PayoutsCollector()
        scrape(collector)
        node.balance, node.down = 999, True

        samples = scrape(collector)

        assert samples[("payouts_hot_wallet_balance_sats", ())] == 123_456
        assert samples[("payouts_metrics_source_up", (("source", "node"),))] == 0

    def test_no_balance_is_invented_when_the_node_was_never_reached(
        self, counters: fakeredis.FakeRedis, db: None, node: type[FakeNode]
    ) -> None:
        node.down = True

        samples = scrape(PayoutsCollector())

        assert ("payouts_hot_wallet_balance_sats", ()) not in samples

    def test_database_and_redis_outages_leave_the_other_sources_served(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node: type[FakeNode]
    ) -> None:
        # A database file in a directory that does not exist, and a Redis nobody listens on.
        monkeypatch.setenv("PAYOUTS_DATABASE_URL", f"sqlite:///{tmp_path}/missing/x.db")
        monkeypatch.setattr(metrics, "counter_redis", lambda: metrics._redis_for(DEAD_REDIS))

        samples = scrape(PayoutsCollector())

        assert samples[("payouts_metrics_source_up", (("source", "database"),))] == 0
        assert samples[("payouts_metrics_source_up", (("source", "redis"),))] == 0
        assert samples[("payouts_hot_wallet_balance_sats", ())] == 123_456
        assert not any(name == "payouts_by_state" for name, _ in samples)
