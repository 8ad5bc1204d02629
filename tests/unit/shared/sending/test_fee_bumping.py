"""Fee bumping (shared/sending/fee_bumping.py): a stuck batch gets a new version that spends every
input of the old one, and each payout is still paid once — judged by the node's ledger.

SQLite, fakeredis and the simulated node in-process, as in test_batching.py. Blocks that leave a
transaction out are mined with `generateblock` and an explicit (empty) transaction list, as on
Bitcoin Core.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cli.addresses import external_address
from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.core.models import (
    Payout,
    PayoutEvent,
    PayoutState,
    Route,
    Transaction,
    TxState,
)
from shared.infra.db import session_scope
from shared.infra.settings import get_settings, reset_settings_cache
from shared.recovery.confirmations import track_confirmations
from shared.recovery.rebroadcast import rebroadcast_signed
from shared.sending.fee_bumping import BumpRefused, bump_stuck, bump_transaction
from shared.sending.payment_check import PaymentMismatch
from shared.sending.replacement_check import check_replacement
from shared.sending.transaction_views import get_transaction
from tests.unit.shared.sending.bumping import (
    bump_session,
    confirm,
    fee_rate,
    funded_node,
    live_txid,
    mine_without_mempool,
    pay_batch,
    tx_row,
)
from tests.unit.shared.sending.test_batch_attacks import Hooked, assert_each_paid_once

S = PayoutState


@pytest.fixture
def node(devnode: RunningDevnode) -> RegtestNode:
    return funded_node(devnode)


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    yield from bump_session(tmp_path, monkeypatch)


# ---------------------------------------------------------------- the policy job


class TestPolicy:
    def test_a_stuck_batch_is_bumped_after_n_blocks_then_confirms_paying_each_once(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, original = pay_batch(session, node)
        assert round(fee_rate(node, original)) == 2
        node.set_fee_estimate(12)

        early = bump_stuck(node, get_settings())
        assert early.bumped == [] and early.skipped == {"not_stuck_yet": 1}

        mine_without_mempool(node, 2)
        report = bump_stuck(node, get_settings())
        assert len(report.bumped) == 1
        bumped = report.bumped[0]
        assert bumped != original
        assert fee_rate(node, bumped) >= 12
        assert node.get_mempool_entry(original) is None  # replaced in the mempool

        old, new = tx_row(session, original), tx_row(session, bumped)
        assert (old.state, new.state) == (TxState.REPLACED, TxState.BROADCAST)
        assert new.replaces_txid == original and new.original_txid == original
        assert set(old.inputs) <= set(new.inputs)
        assert live_txid(session, ids) == bumped
        # Every payout's audit trail records the bump with the old and new fee rate.
        for pid in ids:
            reasons = list(session.execute(
                select(PayoutEvent.reason).where(PayoutEvent.payout_id == pid)
            ).scalars())  # fmt: skip
            assert any(r and r.startswith(f"fee bump: {original} (2.") and bumped in r
                       for r in reasons), reasons  # fmt: skip

        # Nothing more to do once it pays the estimate.
        again = bump_stuck(node, get_settings())
        assert again.bumped == []

        confirm(node)
        session.expire_all()
        assert {p.state for p in (session.get(Payout, pid) for pid in ids) if p} == {S.CONFIRMED}
        assert live_txid(session, ids) == bumped
        assert tx_row(session, bumped).state == TxState.CONFIRMED
        assert tx_row(session, original).state == TxState.REPLACED
        assert_each_paid_once(session, node, ids)

    def test_both_versions_list_their_payouts_and_name_each_other(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, original = pay_batch(session, node)
        node.set_fee_estimate(9)
        mine_without_mempool(node, 2)
        (bumped,) = bump_stuck(node, get_settings()).bumped
        with session_scope() as s:
            old_view, new_view = get_transaction(s, original), get_transaction(s, bumped)
        assert (old_view.replaces, old_view.replaced_by) == (None, bumped)
        assert (new_view.replaces, new_view.replaced_by) == (original, None)
        assert old_view.versions == new_view.versions == (original, bumped)
        assert {p.id for p in old_view.payouts} == {p.id for p in new_view.payouts} == set(ids)
        assert sum(p.fee_share_sats or 0 for p in new_view.payouts) == new_view.fee_sats

    def test_no_estimate_or_paying_enough_means_no_bump(
        self, session: Session, node: RegtestNode
    ) -> None:
        _, original = pay_batch(session, node)
        mine_without_mempool(node, 3)
        assert bump_stuck(node, get_settings()).no_estimate
        node.set_fee_estimate(2)
        assert bump_stuck(node, get_settings()).skipped == {"rate_ok": 1}
        assert node.get_mempool_entry(original) is not None

    def test_the_cap_bounds_what_the_policy_pays(
        self, session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PAYOUTS_MAX_FEE_RATE_SAT_VB", "7")
        reset_settings_cache()
        _, original = pay_batch(session, node)
        node.set_fee_estimate(50)
        mine_without_mempool(node, 2)
        (bumped,) = bump_stuck(node, get_settings()).bumped
        assert 6 <= fee_rate(node, bumped) <= 7.1

    def test_the_fee_cap_in_sats_refuses_a_bump_that_would_pay_more(
        self, session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PAYOUTS_MAX_BUMP_FEE_SATS", "500")
        reset_settings_cache()
        _, original = pay_batch(session, node)
        node.set_fee_estimate(30)
        mine_without_mempool(node, 2)
        report = bump_stuck(node, get_settings())
        assert report.bumped == [] and report.skipped == {"over_cap": 1}
        assert tx_row(session, original).state == TxState.BROADCAST
        assert node.list_lock_unspent() == []  # the change lock was given back


# ---------------------------------------------------------------- an operator's bump


class TestOperatorBump:
    def test_refusals_say_why(self, session: Session, node: RegtestNode) -> None:
        ids, original = pay_batch(session, node)
        settings = get_settings()
        current = fee_rate(node, original)

        with pytest.raises(BumpRefused) as low:
            bump_transaction(node, settings, original, fee_rate_sat_vb=int(current), actor="op")
        assert low.value.code == "rate_too_low"
        with pytest.raises(BumpRefused) as high:
            over = settings.max_fee_rate_sat_vb + 1
            bump_transaction(node, settings, original, fee_rate_sat_vb=over, actor="op")
        assert high.value.code == "over_cap"
        with pytest.raises(BumpRefused) as unknown:
            bump_transaction(node, settings, "ab" * 32, fee_rate_sat_vb=10, actor="op")
        assert unknown.value.code == "not_found"

        done = bump_transaction(node, settings, original, fee_rate_sat_vb=10, actor="op")
        assert done.method == "rbf" and done.broadcast == "sent"
        with pytest.raises(BumpRefused) as stale:
            bump_transaction(node, settings, original, fee_rate_sat_vb=20, actor="op")
        assert stale.value.code == "already_replaced"
        assert done.new_txid in stale.value.message

        confirm(node, 1)
        with pytest.raises(BumpRefused) as mined:
            bump_transaction(node, settings, done.new_txid, fee_rate_sat_vb=30, actor="op")
        assert mined.value.code in ("already_confirmed", "not_broadcast")
        assert_each_paid_once(session, node, ids)

    @pytest.mark.parametrize(("code", "message", "refusal"), [
        (-1, "{txid}:0 is already spent", "inputs_spent"),  # Core 29: the original was mined
        (-8, "Transaction has descendants in the mempool", "has_descendants"),
        (-4, "Cannot bump transaction {txid} which was already bumped by transaction {other}",
         "already_replaced"),
        (-4, "Unable to create transaction. Insufficient funds", "nothing_to_bump_with"),
    ])  # fmt: skip
    def test_the_nodes_refusals_of_psbtbumpfee_become_reasons(
        self, session: Session, node: RegtestNode, code: int, message: str, refusal: str
    ) -> None:
        """What bitcoind says when the state changed between our look and its bump (a block,
        a new descendant, another wallet client's bump) is answered with a reason; nothing is
        stored and the change lock is given back."""
        ids, original = pay_batch(session, node)
        node.fail_next("psbtbumpfee", code, message.format(txid=original, other="ab" * 32))
        with pytest.raises(BumpRefused) as refused:
            bump_transaction(node, get_settings(), original, fee_rate_sat_vb=10, actor="op")
        assert refused.value.code == refusal
        assert tx_row(session, original).state == TxState.BROADCAST
        assert node.list_lock_unspent() == []
        assert live_txid(session, ids) == original

    def test_a_manual_payouts_transaction_is_not_ours_to_bump(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, original = pay_batch(session, node, 1)
        with session_scope() as s:
            s.execute(update(Payout).values(route=Route.MANUAL))
        with pytest.raises(BumpRefused) as refused:
            bump_transaction(node, get_settings(), original, fee_rate_sat_vb=10, actor="op")
        assert refused.value.code == "manual_payout"

    @pytest.mark.parametrize("step", ["psbt_bump_fee", "sign_psbt_with_wallet"])
    def test_a_second_bump_in_the_middle_of_the_first_stores_one_version(
        self, session: Session, node: RegtestNode, step: str
    ) -> None:
        """Two operators (or an operator and the beat job) bump the same transaction at once:
        the second runs whole while the first is between two of its steps. The old version's
        change lock, then the compare-and-set on the old version, let exactly one persist; the
        other is refused with a reason and stores nothing."""
        ids, original = pay_batch(session, node)
        settings = get_settings()
        rival: dict[str, Any] = {}

        def other_bump() -> None:
            try:
                rival["won"] = bump_transaction(node, settings, original, fee_rate_sat_vb=15,
                                                actor="op2").new_txid  # fmt: skip
            except BumpRefused as exc:
                rival["refused"] = exc.code

        hooked = Hooked(node, step, other_bump, after=step == "sign_psbt_with_wallet")
        try:
            first: str | None = bump_transaction(
                hooked, settings, original, fee_rate_sat_vb=10, actor="op1"  # type: ignore[arg-type]
            ).new_txid
        except BumpRefused as exc:
            assert exc.code in ("already_replaced", "change_being_spent"), exc
            first = None
        winners = [t for t in (first, rival.get("won")) if t]
        assert len(winners) == 1, (first, rival)
        assert live_txid(session, ids) == winners[0]
        with session_scope() as s:
            stored = list(s.execute(select(Transaction.txid)).scalars())
        assert sorted(stored) == sorted([original, winners[0]])
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_concurrent_bumps_from_threads_store_one_version(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, original = pay_batch(session, node)
        settings = get_settings()
        outcomes: list[str] = []

        def bump(rate: int) -> None:
            try:
                done = bump_transaction(node, settings, original, fee_rate_sat_vb=rate,
                                        actor=f"op{rate}")  # fmt: skip
                outcomes.append(f"won {done.new_txid}")
            except BumpRefused as exc:
                outcomes.append(exc.code)

        threads = [threading.Thread(target=bump, args=(rate,)) for rate in (10, 11, 12, 13)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o.startswith("won")]
        assert len(winners) == 1, outcomes
        confirm(node)
        session.expire_all()
        with session_scope() as s:
            live = s.execute(
                select(Transaction.txid).where(Transaction.state == TxState.CONFIRMED)
            ).scalars().all()  # fmt: skip
        assert len(live) == 1
        assert live_txid(session, ids) == live[0]
        assert_each_paid_once(session, node, ids)


# ---------------------------------------------------------------- the replacement check


class TestReplacementCheck:
    """The new version is decoded and checked before it is stored; a wallet (or a node) that
    returned something else is refused. The cases are crafted from a real bump's decoding."""

    def _bump_parts(self, session: Session, node: RegtestNode) -> tuple[uuid.UUID, Any, str]:
        _, original = pay_batch(session, node)
        row = tx_row(session, original)
        bump = node.psbt_bump_fee(original, fee_rate_sat_vb=10)
        raw = node.sign_psbt_with_wallet(bump.psbt)
        return row.id, node.decode_raw_transaction(raw), raw

    def test_the_real_bump_passes(self, session: Session, node: RegtestNode) -> None:
        row_id, decoded, raw = self._bump_parts(session, node)
        with session_scope() as s:
            old, vouts = check_replacement(s, node, row_id, decoded, raw)
        assert len(vouts) == 3

    def test_a_dropped_input_is_refused(self, session: Session, node: RegtestNode) -> None:
        row_id, decoded, raw = self._bump_parts(session, node)
        crafted = dataclasses.replace(decoded, inputs=decoded.inputs[1:] + ["cd" * 32 + ":0"])
        with session_scope() as s, pytest.raises(PaymentMismatch) as refused:
            check_replacement(s, node, row_id, crafted, raw)
        assert refused.value.code == "replacement_drops_inputs"

    def test_a_changed_payout_amount_is_refused(self, session: Session, node: RegtestNode) -> None:
        row_id, decoded, raw = self._bump_parts(session, node)
        target = next(o for o in decoded.outputs if o.value_sats < 100_000)  # a payout's
        outputs = [dataclasses.replace(o, value_sats=o.value_sats - 1) if o is target else o
                   for o in decoded.outputs]  # fmt: skip
        crafted = dataclasses.replace(decoded, outputs=outputs)
        with session_scope() as s, pytest.raises(PaymentMismatch) as refused:
            check_replacement(s, node, row_id, crafted, raw)
        assert refused.value.code == "wrong_payment"

    def test_an_extra_output_to_a_stranger_is_refused(
        self, session: Session, node: RegtestNode
    ) -> None:
        row_id, decoded, raw = self._bump_parts(session, node)
        stranger = dataclasses.replace(decoded.outputs[0], address=external_address(), n=99,
                                       value_sats=1_000)  # fmt: skip
        crafted = dataclasses.replace(decoded, outputs=[*decoded.outputs, stranger])
        with session_scope() as s, pytest.raises(PaymentMismatch) as refused:
            check_replacement(s, node, row_id, crafted, raw)
        assert refused.value.code == "unexpected_outputs"

    def test_more_change_without_new_inputs_is_refused(
        self, session: Session, node: RegtestNode
    ) -> None:
        row_id, decoded, raw = self._bump_parts(session, node)
        with session_scope() as s:
            destinations = set(s.execute(select(Payout.destination)).scalars())
        outputs = [o if o.address in destinations else
                   dataclasses.replace(o, value_sats=o.value_sats + 10_000)
                   for o in decoded.outputs]  # fmt: skip
        crafted = dataclasses.replace(decoded, outputs=outputs)
        with session_scope() as s, pytest.raises(PaymentMismatch) as refused:
            check_replacement(s, node, row_id, crafted, raw)
        assert refused.value.code == "replacement_grows_change"


# ---------------------------------------------------------------- CPFP through a descendant


class TestDescendants:
    def test_a_parent_whose_change_a_later_batch_spent_is_accelerated_through_it(
        self, session: Session, node: RegtestNode
    ) -> None:
        """Batch A's change funds batch B (the wallet has one coin). bitcoind refuses to bump A
        (it has descendants), so B — the youngest — is replaced with a fee that lifts A and B
        together to the target rate."""
        coins = [f"{c['txid']}:{c['vout']}" for c in node.list_unspent(1)]
        node.lock_unspent(coins[1:])  # one coin left: the second batch must spend A's change
        first, parent = pay_batch(session, node, 2)
        second, child = pay_batch(session, node, 2)
        assert node.get_mempool_entry(child)["depends"] == [parent]  # type: ignore[index]

        done = bump_transaction(node, get_settings(), parent, fee_rate_sat_vb=10, actor="op")
        assert (done.method, done.bumped_txid) == ("cpfp", child)
        assert done.package_fee_rate_sat_vb >= 10
        assert node.get_mempool_entry(parent) is not None  # the parent stays as it is
        assert live_txid(session, second) == done.new_txid
        assert live_txid(session, first) == parent
        with session_scope() as s:
            notes = list(s.execute(
                select(PayoutEvent.reason).where(PayoutEvent.payout_id == first[0])
            ).scalars())  # fmt: skip
        assert any(n and n.startswith("fee bump (CPFP)") for n in notes), notes
        # Its package now pays the estimate: the policy leaves the parent alone.
        node.set_fee_estimate(10)
        mine_without_mempool(node, 2)
        assert bump_stuck(node, get_settings()).bumped == []
        confirm(node)
        assert_each_paid_once(session, node, first + second)


# ---------------------------------------------------------------- faults around the broadcast


class TestBroadcastFaults:
    def test_a_dropped_reply_leaves_the_new_version_to_the_rebroadcast_job(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, original = pay_batch(session, node)
        node.drop_reply("sendrawtransaction")
        done = bump_transaction(node, get_settings(), original, fee_rate_sat_vb=10, actor="op")
        assert done.broadcast == "unknown"
        assert tx_row(session, done.new_txid).state == TxState.SIGNED
        assert live_txid(session, ids) == done.new_txid
        counts = rebroadcast_signed(node, get_settings())
        # The node had it already; like Core it answers a resend of a mempool transaction with
        # its txid. Same bytes, so no second spend either way.
        assert counts == {"sent": 1}
        assert tx_row(session, done.new_txid).state == TxState.BROADCAST
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_a_refused_bump_makes_the_old_version_live_again(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, original = pay_batch(session, node)
        node.fail_next("sendrawtransaction", -26, "non-mandatory-script-verify-flag (crafted)")
        done = bump_transaction(node, get_settings(), original, fee_rate_sat_vb=10, actor="op")
        assert done.broadcast == "rejected"
        assert tx_row(session, done.new_txid).state == TxState.REPLACED
        assert tx_row(session, original).state == TxState.BROADCAST
        assert live_txid(session, ids) == original
        session.expire_all()
        assert {p.state for p in (session.get(Payout, pid) for pid in ids) if p} == {S.BROADCAST}
        again = bump_transaction(node, get_settings(), original, fee_rate_sat_vb=11, actor="op")
        assert again.broadcast == "sent"
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_the_original_confirming_after_a_reorg_is_the_one_payment(
        self, session: Session, node: RegtestNode
    ) -> None:
        """The bump confirms, then a reorg drops its block and a miner takes the original
        instead: the payouts follow the original; each is still paid once."""
        ids, original = pay_batch(session, node)
        original_hex = tx_row(session, original).raw_hex
        done = bump_transaction(node, get_settings(), original, fee_rate_sat_vb=10, actor="op")
        confirm(node, 1)
        assert tx_row(session, done.new_txid).confirmations == 1

        node.reorg(1, exclude=[done.new_txid])  # its block is gone; it waits in the mempool
        node.call("generateblock", node.get_new_address(), [original_hex])
        assert node.get_mempool_entry(done.new_txid) is None
        track_confirmations(node, get_settings())
        assert live_txid(session, ids) == original
        assert tx_row(session, original).state == TxState.BROADCAST
        assert tx_row(session, done.new_txid).state == TxState.REPLACED
        confirm(node)
        session.expire_all()
        assert {p.state for p in (session.get(Payout, pid) for pid in ids) if p} == {S.CONFIRMED}
        assert live_txid(session, ids) == original
        assert_each_paid_once(session, node, ids)
