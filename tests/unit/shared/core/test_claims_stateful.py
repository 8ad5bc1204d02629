"""Hypothesis stateful test of the state machine and the claim logic (issue 5).

Random interleavings of approve, cancel, worker claims, manual claims, lease expiry and
takeover, building and persisting transactions (including by a holder whose lease was taken
over), releases, broadcasts, confirmations and reorgs, all through the real functions against
SQLite. Invariants after every step:
- never two persisted transactions for one payout that could both confirm (here: that do not
  share an input);
- never a broadcast of a payout that was not approved, or that was cancelled;
- the audit trail replays to the row's current state.

`BatchClaimMachine` (below) does the same for the batcher: several workers claiming, narrowing,
releasing, failing and persisting batches, stalls with takeovers of all or part of a batch,
dead batches re-queued, against an oracle of what was claimed and persisted.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from embit import ec, script
from embit.networks import NETWORKS
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.core.batch_claims import (
    BatchClaim,
    SignedBatch,
    claim_batch,
    fail_exhausted,
    fail_members,
    fee_shares,
    persist_batch,
    release_members,
)
from shared.core.claims import (
    Claim,
    SignedTx,
    claim_for_manual,
    claim_for_worker,
    persist_signed_tx,
    release_claim,
    reserve_inputs,
)
from shared.core.models import (
    Payout,
    PayoutEvent,
    PayoutState,
    Route,
    Transaction,
    TxState,
    utcnow,
)
from shared.core.state_machine import create_payout, transition, transition_many, transition_tx
from shared.sending.broadcasting import DeadProof, mark_dead
from tests.unit.shared.factories import (
    REGTEST_P2WPKH,
    REGTEST_P2WSH,
    TESTNET_P2PKH,
    sqlite_engine,
)

S = PayoutState
ACTORS = ["worker:w1", "worker:w2", "manual:alice", "manual:bob"]
_outpoints = (f"{n:064x}:0" for n in itertools.count(1))


@dataclass
class Holder:
    claim: Claim | None = None
    built: SignedTx | None = None


@dataclass
class Ledger:
    persisted: dict[uuid.UUID, list[SignedTx]] = field(default_factory=dict)
    broadcast: list[uuid.UUID] = field(default_factory=list)


class ClaimMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.engine = sqlite_engine(f"{self.tmp.name}/stateful.db")
        self.session = Session(self.engine, expire_on_commit=False)
        self.payouts: list[uuid.UUID] = []
        self.holders = {actor: Holder() for actor in ACTORS}
        self.ledger = Ledger()
        # One payout per run: the invariants are per payout, and a single target lets the
        # search reach deep interleavings (claim, stall, takeover, late persist) quickly.
        self.create(10_000)

    def teardown(self) -> None:
        if hasattr(self, "session"):
            self.session.close()
            self.engine.dispose()
            self.tmp.cleanup()

    def _payout(self, index: int) -> uuid.UUID:
        return self.payouts[index % len(self.payouts)]

    def _row(self, payout_id: uuid.UUID) -> Payout:
        self.session.expire_all()
        row = self.session.get(Payout, payout_id)
        assert row is not None
        return row

    def create(self, amount: int) -> None:
        payout = create_payout(
            self.session, destination=REGTEST_P2WPKH, amount_sats=amount, created_by="t"
        )
        self.session.commit()
        self.payouts.append(payout.id)

    @rule(index=st.just(0), automatic=st.booleans())
    def approve(self, index: int, automatic: bool) -> None:
        transition(
            self.session, self._payout(index), expected=S.AWAITING_APPROVAL, target=S.APPROVED,
            actor="approver", values={"route": Route.AUTOMATIC if automatic else Route.MANUAL,
                                      "approved_by": "approver"},
        )  # fmt: skip
        self.session.commit()

    @rule(index=st.just(0))
    def cancel(self, index: int) -> None:
        transition(
            self.session, self._payout(index), expected=[S.AWAITING_APPROVAL, S.APPROVED],
            target=S.CANCELLED, actor="approver",
        )  # fmt: skip
        self.session.commit()

    @rule(index=st.just(0), actor=st.sampled_from(ACTORS))
    def claim(self, index: int, actor: str) -> None:
        kind, name = actor.split(":")
        payout_id = self._payout(index)
        if kind == "worker":
            won = claim_for_worker(self.session, payout_id, name, lease_seconds=60)
        else:
            won = claim_for_manual(self.session, payout_id, name, lease_seconds=600)
        self.session.commit()
        if won is not None:
            self.holders[actor] = Holder(claim=won)

    @rule(actor=st.sampled_from(ACTORS))
    def build(self, actor: str) -> None:
        holder = self.holders[actor]
        if holder.claim is None:
            return
        if actor.startswith("manual:"):
            inputs = holder.claim.reserved_inputs or [next(_outpoints)]
            if not holder.claim.reserved_inputs:
                reserve_inputs(self.session, holder.claim, inputs)
                self.session.commit()
        else:
            inputs = [next(_outpoints)]
        holder.built = SignedTx(uuid.uuid4().hex * 2, "00", 200, inputs)

    @rule(actor=st.sampled_from(ACTORS))
    def persist(self, actor: str) -> None:
        holder = self.holders[actor]
        if holder.claim is None or holder.built is None:
            return
        if persist_signed_tx(self.session, holder.claim, holder.built, actor=actor):
            self.session.commit()
            # Fencing: only the current claim holder can ever persist.
            assert self._row(holder.claim.payout_id).claimed_by == actor
            self.ledger.persisted.setdefault(holder.claim.payout_id, []).append(holder.built)
        self.session.commit()

    @rule(actor=st.sampled_from(ACTORS))
    def release(self, actor: str) -> None:
        holder = self.holders[actor]
        if holder.claim is not None:
            release_claim(self.session, holder.claim, actor=actor, reason="released")
            self.session.commit()

    @rule(index=st.just(0))
    def expire_lease(self, index: int) -> None:
        self.session.execute(
            update(Payout)
            .where(Payout.id == self._payout(index))
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        self.session.commit()

    @rule(stalled=st.sampled_from(ACTORS), taker=st.sampled_from(ACTORS))
    def lease_expires_and_another_takes_over(self, stalled: str, taker: str) -> None:
        """`stalled` pauses past its lease (GC, VM freeze); `taker` claims the payout."""
        claim = self.holders[stalled].claim
        if claim is None:
            return
        self.session.execute(
            update(Payout)
            .where(Payout.id == claim.payout_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        self.session.commit()
        self.claim(self.payouts.index(claim.payout_id), taker)

    @rule(index=st.just(0))
    def broadcast(self, index: int) -> None:
        payout_id = self._payout(index)
        if transition(self.session, payout_id, expected=S.SIGNED, target=S.BROADCAST, actor="b"):
            self.ledger.broadcast.append(payout_id)
        self.session.commit()

    @rule(index=st.just(0), confirm=st.booleans())
    def confirm_or_reorg(self, index: int, confirm: bool) -> None:
        source, target = (S.BROADCAST, S.CONFIRMED) if confirm else (S.CONFIRMED, S.BROADCAST)
        transition(self.session, self._payout(index), expected=source, target=target, actor="c")
        self.session.commit()

    @invariant()
    def at_most_one_confirmable_transaction_per_payout(self) -> None:
        for payout_id, txs in getattr(self, "ledger", Ledger()).persisted.items():
            for a, b in itertools.combinations(txs, 2):
                assert set(a.inputs) & set(b.inputs), f"two independent txs for {payout_id}"

    @invariant()
    def broadcasts_only_of_approved_never_cancelled_payouts(self) -> None:
        if not hasattr(self, "ledger"):
            return
        for payout_id in self.ledger.broadcast:
            states = {e.to_state for e in self._events(payout_id)}
            assert S.APPROVED in states and S.CANCELLED not in states

    @invariant()
    def audit_trail_replays_to_the_current_state(self) -> None:
        for payout_id in getattr(self, "payouts", []):
            events = self._events(payout_id)
            assert events[0].from_state is None
            for before, after in itertools.pairwise(events):
                assert after.from_state == before.to_state
            assert events[-1].to_state == self._row(payout_id).state

    def _events(self, payout_id: uuid.UUID) -> list[PayoutEvent]:
        stmt = select(PayoutEvent).where(PayoutEvent.payout_id == payout_id)
        return list(self.session.scalars(stmt.order_by(PayoutEvent.id)))


ClaimMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestClaimMachine = ClaimMachine.TestCase


# ------------------------------------------------------------------------------ batches
#
# The batcher's claim (shared/core/batch_claims.py) against an oracle: several workers claim
# batches of the oldest approved automatic payouts, build a transaction for their batch,
# narrow it (partial funding: release the rest), release or fail members, stall past their
# lease while another takes over, persist late; persisted transactions are broadcast,
# confirmed, or proven dead and their payouts re-queued (through the real mark_dead).
# Invariants after every step:
# - no payout is in two persisted transactions unless every earlier one is dead;
# - a persist moves all of its batch or none of it, and stores a transaction row only then;
# - a claimed payout's token is the token of exactly one issued batch claim, which named it;
#   no batch claim holds a manual payout, a payout that was not claimable, or one
#   destination twice;
# - attempts are never negative.

WORKERS = ["b1", "b2", "b3"]
BATCH_MAX = 4
MAX_ATTEMPTS = 4
# A fixed key, so a replayed example builds the same rows.
_FOURTH = script.p2wpkh(ec.PrivateKey(b"\x04" * 32).get_public_key()).address(
    NETWORKS["regtest"]
)
# Six payouts over four destinations: a repeated destination must wait for another batch.
DESTINATIONS = [REGTEST_P2WPKH, REGTEST_P2WSH, REGTEST_P2WPKH, TESTNET_P2PKH, _FOURTH,
                REGTEST_P2WSH]  # fmt: skip
MAX_PAYOUTS = 10
# Setup approves each payout for the automatic route, the manual one, or not at all.
ROUTES: list[Route | None] = [Route.AUTOMATIC, Route.AUTOMATIC, Route.AUTOMATIC, Route.MANUAL,
                              None]  # fmt: skip
_txids = (f"{n:064x}" for n in itertools.count(10**6))


@dataclass
class BatchHolder:
    claim: BatchClaim | None = None
    built: SignedBatch | None = None


@dataclass
class TxRecord:
    row_id: uuid.UUID
    txid: str
    members: frozenset[uuid.UUID]
    dead: bool = False


@dataclass(frozen=True)
class Row:
    state: str
    route: str | None
    destination: str
    amount_sats: int
    claimed_by: str | None
    claim_token: str | None
    lease_until: datetime | None
    attempts: int
    tx_id: uuid.UUID | None
    vout: int | None
    fee_share_sats: int | None
    version: int


class _DeadConflictNode:
    """Just enough of a node for mark_dead: the conflict is confirmed 10 deep and pays none
    of the payouts, so a dead automatic batch is re-queued."""

    def get_transaction(self, txid: str) -> dict[str, object]:
        return {"confirmations": 10}

    def get_raw_transaction(self, txid: str) -> dict[str, object]:
        return {"vout": []}


class BatchClaimMachine(RuleBasedStateMachine):
    @initialize(
        routes=st.lists(st.sampled_from(ROUTES), min_size=len(DESTINATIONS),
                        max_size=len(DESTINATIONS)),
        worker=st.sampled_from(WORKERS), size=st.integers(2, BATCH_MAX),
    )  # fmt: skip
    def setup(self, routes: list[Route | None], worker: str, size: int) -> None:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.engine = sqlite_engine(f"{self.tmp.name}/batches.db")

        @sa_event.listens_for(self.engine, "connect")
        def _no_fsync(dbapi_conn: Any, _record: Any) -> None:
            # Speed only: a run is thrown away, so its commits need not survive a power cut.
            dbapi_conn.execute("PRAGMA synchronous=OFF")

        self.session = Session(self.engine, expire_on_commit=False)
        self.payouts: list[uuid.UUID] = []
        self.holders = {w: BatchHolder() for w in WORKERS}
        self.claims: dict[str, BatchClaim] = {}  # token -> every batch claim ever issued
        self.txs: dict[uuid.UUID, TxRecord] = {}  # transaction row id -> what it pays
        self.paid_by: dict[uuid.UUID, list[uuid.UUID]] = {}  # payout -> its tx rows, in order
        # Most runs start with approved payouts, so the search spends its steps on batches.
        for destination, route in zip(DESTINATIONS, routes, strict=True):
            self.create(destination, route)
        # Every run starts with a worker holding a batch, so the steps go to what can happen
        # to it (narrowed, released, stalled, taken over, persisted late).
        self.claim(worker, size)

    def create(self, destination: str, route: Route | None) -> None:
        payout = create_payout(
            self.session, destination=destination, amount_sats=10_000 + len(self.payouts),
            created_by="t",
        )  # fmt: skip
        self.session.commit()
        self.payouts.append(payout.id)
        if route is not None:
            self.approve(len(self.payouts) - 1, route == Route.AUTOMATIC)

    @rule(destination=st.sampled_from(DESTINATIONS), approve=st.booleans())
    def new_payout(self, destination: str, approve: bool) -> None:
        if len(self.payouts) < MAX_PAYOUTS:
            self.create(destination, Route.AUTOMATIC if approve else None)

    def teardown(self) -> None:
        if hasattr(self, "session"):
            self.session.close()
            self.engine.dispose()
            self.tmp.cleanup()

    def _rows(self) -> dict[uuid.UUID, Row]:
        """Every payout as it is now (copies: the session's objects change under a CAS)."""
        fields = list(Row.__dataclass_fields__)
        columns = [getattr(Payout, f) for f in fields]
        return {
            r[0]: Row(*r[1:]) for r in self.session.execute(select(Payout.id, *columns)).all()
        }

    # ---------------------------------------------------------------- intake

    @rule(index=st.integers(0, MAX_PAYOUTS - 1), automatic=st.booleans())
    def approve(self, index: int, automatic: bool) -> None:
        route = Route.AUTOMATIC if automatic else Route.MANUAL
        transition(
            self.session, self.payouts[index % len(self.payouts)], expected=S.AWAITING_APPROVAL,
            target=S.APPROVED, actor="approver",
            values={"route": route, "approved_by": "approver", "approved_at": utcnow()},
        )  # fmt: skip
        self.session.commit()

    @rule(index=st.integers(0, MAX_PAYOUTS - 1))
    def cancel(self, index: int) -> None:
        payout_id = self.payouts[index % len(self.payouts)]
        row = self._rows()[payout_id]
        # As intake.cancel does: a CAS from the state read, guarded by the version read.
        transition(
            self.session, payout_id, expected=[S.AWAITING_APPROVAL, S.APPROVED],
            target=S.CANCELLED, actor="approver", guards=[Payout.version == row.version],
        )  # fmt: skip
        self.session.commit()

    # ---------------------------------------------------------------- a worker's batch

    # The batch size varies per claim (a rolling deploy changing BATCH_MAX_PAYOUTS, or fewer
    # distinct destinations), so a takeover can take part of a stalled batch.
    @rule(worker=st.sampled_from(WORKERS), size=st.integers(1, BATCH_MAX))
    def claim(self, worker: str, size: int = BATCH_MAX) -> None:
        before = self._rows()
        now = utcnow()
        claim = claim_batch(
            self.session, worker_name=worker, lease_seconds=60, max_payouts=size,
            max_attempts=MAX_ATTEMPTS,
        )  # fmt: skip
        self.session.commit()
        if claim is None:
            return
        assert claim.token not in self.claims, "a claim token was issued twice"
        assert 0 < len(claim.members) <= size
        assert len({m.destination for m in claim.members}) == len(claim.members)
        for member in claim.members:
            was = before[member.payout_id]
            assert was.route == Route.AUTOMATIC, "a manual payout got into a batch"
            assert was.attempts < MAX_ATTEMPTS
            taken_over = (
                was.state == S.CLAIMED
                and was.lease_until is not None
                and was.lease_until < now
                and (was.claimed_by or "").startswith("worker:")
            )
            assert was.state == S.APPROVED or taken_over, f"claimed a {was.state} payout"
            if taken_over:
                event("batch claim took over an expired lease")
            assert (member.destination, member.amount_sats) == (was.destination,
                                                                 was.amount_sats)  # fmt: skip
        self.claims[claim.token] = claim
        # A worker runs one batch at a time; an older claim it held is abandoned (a crash).
        self.holders[worker] = BatchHolder(claim=claim)
        self._build(self.holders[worker])

    def _build(self, holder: BatchHolder) -> None:
        """What the run does right after a claim, and after narrowing its batch: fund and sign
        one transaction paying every member (here: fresh inputs, nothing asked of a node)."""
        assert holder.claim is not None
        ids = holder.claim.payout_ids
        holder.built = SignedBatch(
            tx=SignedTx(next(_txids), "00", 300, [f"{next(_txids)}:0"], vsize=200),
            vouts={pid: n for n, pid in enumerate(ids)},
            fee_shares=fee_shares(300, ids),
        )

    def _busy(self, index: int) -> tuple[str, BatchHolder] | None:
        """One of the workers holding a batch (the index picks which)."""
        busy = [(w, h) for w, h in self.holders.items() if h.claim is not None]
        return busy[index % len(busy)] if busy else None

    @rule(index=st.integers(0, 5), keep=st.integers(1, BATCH_MAX - 1), count_attempt=st.booleans())
    def narrow(self, index: int, keep: int, count_attempt: bool) -> None:
        """Partial funding: the oldest `keep` stay in the batch, the rest are released."""
        picked = self._busy(index)
        if picked is None:
            return
        _, holder = picked
        assert holder.claim is not None
        members = list(holder.claim.members)
        if keep >= len(members):
            return
        release_members(self.session, holder.claim, members[keep:], reason="part",
                        count_attempt=count_attempt)  # fmt: skip
        self.session.commit()
        holder.claim = holder.claim.only(members[:keep])
        self._build(holder)

    @rule(index=st.integers(0, 5), count_attempt=st.booleans())
    def release_all(self, index: int, count_attempt: bool) -> None:
        """No funds, the chain limit, the node down: the whole batch is given back."""
        picked = self._busy(index)
        if picked is None:
            return
        worker, holder = picked
        assert holder.claim is not None
        release_members(self.session, holder.claim, holder.claim.members, reason="wait",
                        count_attempt=count_attempt)  # fmt: skip
        self.session.commit()
        self.holders[worker] = BatchHolder()

    @rule(index=st.integers(0, 5))
    def fail_first_member(self, index: int) -> None:
        """The node refuses one payout on its own: it fails, the rest are rebuilt."""
        picked = self._busy(index)
        if picked is None:
            return
        worker, holder = picked
        assert holder.claim is not None
        members = list(holder.claim.members)
        fail_members(self.session, holder.claim, members[:1], reason="refused")
        self.session.commit()
        if members[1:]:
            holder.claim = holder.claim.only(members[1:])
            self._build(holder)
        else:
            self.holders[worker] = BatchHolder()

    @rule(index=st.integers(0, 5))
    def stall_past_lease(self, index: int) -> None:
        """The worker pauses (GC, frozen VM) until its lease ran out; it keeps its claim."""
        picked = self._busy(index)
        if picked is None:
            return
        _, holder = picked
        assert holder.claim is not None
        self.session.execute(
            update(Payout)
            .where(Payout.claim_token == holder.claim.token)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        self.session.commit()

    @rule(index=st.integers(0, 5), offset=st.integers(1, len(WORKERS) - 1),
          size=st.integers(1, BATCH_MAX - 1), wakes_up=st.booleans())  # fmt: skip
    def stalled_batch_is_taken_over(self, index: int, offset: int, size: int,
                                    wakes_up: bool) -> None:  # fmt: skip
        """The stall and a takeover (of all or part of the batch) by another worker in one
        step. The stalled worker keeps its stale claim and transaction; with `wakes_up` it
        tries to persist them at once, else maybe later."""
        picked = self._busy(index)
        if picked is None:
            return
        stalled = picked[0]
        taker = WORKERS[(WORKERS.index(stalled) + offset) % len(WORKERS)]
        self.stall_past_lease(index)
        self.claim(taker, size)
        if wakes_up and self.holders[stalled].claim is not None:
            self._persist(stalled)

    @rule(worker=st.sampled_from(WORKERS))
    def give_up_poison(self, worker: str) -> None:
        fail_exhausted(self.session, worker_name=worker, max_attempts=MAX_ATTEMPTS, limit=50)
        self.session.commit()

    @rule(index=st.integers(0, 5))
    def persist(self, index: int) -> None:
        picked = self._busy(index)
        if picked is not None:
            self._persist(picked[0])

    def _persist(self, worker: str) -> None:
        holder = self.holders[worker]
        claim, built = holder.claim, holder.built
        assert claim is not None and built is not None
        before = self._rows()
        row = persist_batch(self.session, claim, built)
        self.session.commit()
        after = self._rows()
        ids = set(claim.payout_ids)
        if row is None:
            # None moved: every payout of the batch is exactly as it was.
            for pid in ids:
                fields = ("state", "version", "claim_token", "tx_id")
                was = [getattr(before[pid], f) for f in fields]
                assert [getattr(after[pid], f) for f in fields] == was, "a lost persist wrote"
            event("persist lost: a member no longer carried the token")
            self.holders[worker] = BatchHolder()  # LEASE_LOST: the run unlocks and stops
            return
        # All moved, with the claim token they were claimed with, to this transaction.
        for pid in ids:
            was, now = before[pid], after[pid]
            assert was.state == S.CLAIMED and was.claim_token == claim.token, (
                f"a persist moved payout {pid}, which was {was.state} with another token: "
                "part of a batch was persisted"
            )
            assert now.state == S.SIGNED and now.tx_id == row.id
            assert now.vout == built.vouts[pid] and now.fee_share_sats == built.fee_shares[pid]
            earlier = [self.txs[t] for t in self.paid_by.get(pid, [])]
            assert all(t.dead for t in earlier), f"payout {pid} got a second live transaction"
        assert {p for p, r in after.items() if r.tx_id == row.id} == ids
        self.txs[row.id] = TxRecord(row.id, built.tx.txid, frozenset(ids))
        for pid in ids:
            self.paid_by.setdefault(pid, []).append(row.id)
        event(f"persisted a batch of {len(ids)}")
        if any(len(self.paid_by[pid]) > 1 for pid in ids):
            event("persisted a re-queued payout's second transaction")
        self.holders[worker] = BatchHolder()

    # ---------------------------------------------------------------- after the persist

    def _live_tx(self, index: int) -> TxRecord | None:
        live = [t for t in self.txs.values() if not t.dead]
        return live[index % len(live)] if live else None

    @rule(index=st.integers(0, 10))
    def broadcast_or_confirm(self, index: int) -> None:
        """The next step of a live transaction: `signed -> broadcast -> confirmed`."""
        tx = self._live_tx(index)
        if tx is None:
            return
        for source, target in ((S.SIGNED, S.BROADCAST), (S.BROADCAST, S.CONFIRMED)):
            if transition_tx(self.session, tx.row_id, expected=TxState(source),
                             target=TxState(target)):  # fmt: skip
                transition_many(self.session, list(tx.members), expected=source, target=target,
                                actor="tracker")  # fmt: skip
                break
        self.session.commit()

    @rule(index=st.integers(0, 10))
    def proven_dead_and_requeued(self, index: int) -> None:
        """A conflicting spend confirmed and was buried: mark_dead re-queues the batch."""
        tx = self._live_tx(index)
        if tx is None:
            return
        row = self.session.get(Transaction, tx.row_id, populate_existing=True)
        assert row is not None
        if row.state == TxState.CONFIRMED:
            return  # ours confirmed; nothing conflicting can be deep
        proof = DeadProof(outpoint=row.inputs[0], conflicts=["ee" * 32])
        mark_dead(self.session, _DeadConflictNode(), row, proof, "tracker",  # type: ignore[arg-type]
                  dead_depth=6)  # fmt: skip
        self.session.commit()
        tx.dead = True

    # ---------------------------------------------------------------- invariants
    # One invariant reading the tables once per step; the checks are the methods below.

    @invariant()
    def batch_invariants(self) -> None:
        if not hasattr(self, "txs"):
            return  # before setup
        rows = self._rows()
        self.at_most_one_live_transaction_per_payout()
        self.stored_transactions_are_exactly_the_successful_persists(rows)
        self.a_claimed_payouts_token_is_one_batch_claims(rows)
        self.audit_trail_replays_to_the_current_state(rows)

    def at_most_one_live_transaction_per_payout(self) -> None:
        for pid, tx_rows in self.paid_by.items():
            live = [t for t in tx_rows if not self.txs[t].dead]
            assert len(live) <= 1, f"payout {pid} is in {len(live)} live transactions"
            assert all(self.txs[t].dead for t in tx_rows[:-1])

    def stored_transactions_are_exactly_the_successful_persists(
        self, rows: dict[uuid.UUID, Row]
    ) -> None:
        stored = set(self.session.scalars(select(Transaction.id)))
        assert stored == set(self.txs), "a transaction row exists that no persist won"
        for pid, row in rows.items():
            if row.state in (S.SIGNED, S.BROADCAST, S.CONFIRMED):
                assert row.tx_id is not None and pid in self.txs[row.tx_id].members
                assert not self.txs[row.tx_id].dead

    def a_claimed_payouts_token_is_one_batch_claims(self, rows: dict[uuid.UUID, Row]) -> None:
        for pid, row in rows.items():
            if row.state == S.CLAIMED:
                assert row.claim_token in self.claims, "a claim token no batch claim issued"
                claim = self.claims[row.claim_token]
                assert pid in claim.payout_ids
                assert row.claimed_by == claim.holder
            assert row.attempts >= 0, f"payout {pid} has {row.attempts} attempts"

    def audit_trail_replays_to_the_current_state(self, rows: dict[uuid.UUID, Row]) -> None:
        trails: dict[uuid.UUID, list[Any]] = {}
        stmt = select(PayoutEvent.payout_id, PayoutEvent.from_state, PayoutEvent.to_state)
        for e in self.session.execute(stmt.order_by(PayoutEvent.id)).all():
            trails.setdefault(e.payout_id, []).append(e)
        for pid, row in rows.items():
            events = trails[pid]
            assert events[0].from_state is None
            for before, after in itertools.pairwise(events):
                assert after.from_state == before.to_state
            assert events[-1].to_state == row.state


BatchClaimMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBatchClaimMachine = BatchClaimMachine.TestCase
