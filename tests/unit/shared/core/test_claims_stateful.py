"""Hypothesis stateful test of the state machine and the claim logic (issue 5).

Random interleavings of approve, cancel, worker claims, manual claims, lease expiry and
takeover, building and persisting transactions (including by a holder whose lease was taken
over), releases, broadcasts, confirmations and reorgs, all through the real functions against
SQLite. Invariants after every step:
- never two persisted transactions for one payout that could both confirm (here: that do not
  share an input);
- never a broadcast of a payout that was not approved, or that was cancelled;
- the audit trail replays to the row's current state.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.core.claims import (
    Claim,
    SignedTx,
    claim_for_manual,
    claim_for_worker,
    persist_signed_tx,
    release_claim,
    reserve_inputs,
)
from shared.core.models import Payout, PayoutEvent, PayoutState, Route, utcnow
from shared.core.state_machine import create_payout, transition
from tests.unit.shared.factories import REGTEST_P2WPKH, sqlite_engine

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
