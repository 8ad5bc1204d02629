"""Claims: one sender wins the CAS on `approved`; the token fences persisting (docs/architecture.md
§5.3)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.core.claims import (
    ClaimChanged,
    SignedTx,
    claim_for_manual,
    claim_for_worker,
    current_claim,
    persist_signed_tx,
    release_claim,
)
from shared.core.errors import DomainError, ErrorKind
from shared.core.models import Payout, PayoutState, Route, Transaction, utcnow
from tests.unit.shared.factories import make_payout

S = PayoutState
TX = SignedTx(txid="ab" * 32, raw_hex="00", fee_sats=141, inputs=["cd" * 32 + ":0"])


def reload(session: Session, payout: Payout) -> Payout:
    session.expire_all()
    fresh = session.get(Payout, payout.id)
    assert fresh is not None
    return fresh


class TestWorkerClaim:
    def test_claims_an_approved_automatic_payout_once(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC)
        first = claim_for_worker(session, payout.id, "w1", lease_seconds=60)
        second = claim_for_worker(session, payout.id, "w2", lease_seconds=60)
        assert first is not None and second is None
        row = reload(session, payout)
        assert (row.state, row.claimed_by, row.attempts) == (S.CLAIMED, "worker:w1", 1)

    def test_never_claims_a_manual_route_payout(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.MANUAL)
        assert claim_for_worker(session, payout.id, "w1", lease_seconds=60) is None
        assert reload(session, payout).state == S.APPROVED

    def test_takes_over_only_an_expired_lease(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC)
        first = claim_for_worker(session, payout.id, "w1", lease_seconds=60)
        assert first is not None
        assert claim_for_worker(session, payout.id, "w2", lease_seconds=60) is None
        row = reload(session, payout)
        row.lease_until = utcnow() - timedelta(seconds=1)
        session.commit()
        taken = claim_for_worker(session, payout.id, "w2", lease_seconds=60)
        assert taken is not None and taken.token != first.token
        assert reload(session, payout).attempts == 2

    @pytest.mark.parametrize(
        "state", [S.AWAITING_APPROVAL, S.SIGNED, S.BROADCAST, S.CANCELLED, S.FAILED]
    )
    def test_refuses_unclaimable_states(self, session: Session, state: PayoutState) -> None:
        payout = make_payout(session, state=state, route=Route.AUTOMATIC)
        assert claim_for_worker(session, payout.id, "w1", lease_seconds=60) is None


class TestManualClaim:
    def test_refuses_automatic_payouts(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC)
        assert claim_for_manual(session, payout.id, "alice", lease_seconds=600) is None

    def test_worker_and_manual_cannot_both_hold_a_payout(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.MANUAL)
        assert claim_for_manual(session, payout.id, "alice", lease_seconds=600) is not None
        assert claim_for_manual(session, payout.id, "bob", lease_seconds=600) is None
        assert claim_for_worker(session, payout.id, "w1", lease_seconds=60) is None
        assert reload(session, payout).claimed_by == "manual:alice"

    def test_an_expired_manual_claim_can_be_taken_over_by_another_signer(
        self, session: Session
    ) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.MANUAL)
        assert claim_for_manual(session, payout.id, "alice", lease_seconds=600) is not None
        row = reload(session, payout)
        row.lease_until = utcnow() - timedelta(seconds=1)
        row.reserved_inputs = ["ef" * 32 + ":1"]
        session.commit()
        taken = claim_for_manual(session, payout.id, "bob", lease_seconds=600)
        assert taken is not None and taken.reserved_inputs == ["ef" * 32 + ":1"]


class TestPersistSignedTx:
    def test_persists_with_the_current_token(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC)
        claim = claim_for_worker(session, payout.id, "w1", lease_seconds=60)
        assert claim is not None
        assert persist_signed_tx(session, claim, TX, actor="worker:w1") is True
        session.commit()
        row = reload(session, payout)
        assert row.state == S.SIGNED and row.tx_id is not None

    def test_a_stale_token_persists_nothing(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC)
        stale = claim_for_worker(session, payout.id, "w1", lease_seconds=60)
        assert stale is not None
        row = reload(session, payout)
        row.lease_until = utcnow() - timedelta(seconds=1)
        session.commit()
        assert claim_for_worker(session, payout.id, "w2", lease_seconds=60) is not None
        assert persist_signed_tx(session, stale, TX, actor="worker:w1") is False
        session.commit()
        assert reload(session, payout).state == S.CLAIMED
        assert session.scalar(select(func.count()).select_from(Transaction)) == 0

    def test_release_returns_the_payout_and_records_why(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.AUTOMATIC)
        claim = claim_for_worker(session, payout.id, "w1", lease_seconds=60)
        assert claim is not None
        assert release_claim(
            session, claim, actor="worker:w1", reason="no funds", count_attempt=False
        )
        session.commit()
        row = reload(session, payout)
        assert (row.state, row.last_error, row.claim_token, row.attempts) == (
            S.APPROVED, "no funds", None, 0,
        )  # fmt: skip


class TestGuards:
    """Real errors, not `assert`s: `python -O` strips asserts, and these guard who may pay."""

    def test_current_claim_of_an_unclaimed_row_raises(self, session: Session) -> None:
        payout = make_payout(session, state=S.APPROVED, route=Route.MANUAL)
        with pytest.raises(ClaimChanged) as caught:
            current_claim(payout)
        assert isinstance(caught.value, DomainError)
        assert (caught.value.code, caught.value.kind) == ("invalid_state", ErrorKind.CONFLICT)
        assert caught.value.current_state == S.APPROVED

    def test_current_claim_of_a_claimed_row_without_a_token_raises(self, session: Session) -> None:
        payout = make_payout(
            session, state=S.CLAIMED, route=Route.MANUAL, claimed_by="manual:x", claim_token=None
        )
        with pytest.raises(ClaimChanged):
            current_claim(payout)

    def test_the_guard_holds_under_python_dash_o(self) -> None:
        code = (
            "import uuid\n"
            "from shared.core.claims import ClaimChanged, current_claim\n"
            "from shared.core.models import Payout\n"
            "p = Payout(id=uuid.uuid4(), state='approved', destination='x', amount_sats=1,\n"
            "           attempts=0, created_by='c')\n"
            "try:\n"
            "    current_claim(p)\n"
            "except ClaimChanged:\n"
            "    print('refused')\n"
            "else:\n"
            "    print('returned a claim')\n"
        )
        done = subprocess.run(
            [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60
        )
        assert done.stdout.strip() == "refused", done.stderr
