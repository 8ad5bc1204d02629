"""Attacks on fee bumping (shared/sending/fee_bumping.py), judged by the simulated node's ledger.

Each test plays a key holder (`payouts:approve` calling the bump route with any txid and any
rate, at any moment; `payouts:create` choosing destinations) or a hostile or failing node, and
asserts the safe outcome by `devnode_ledger` (`assert_each_paid_once`): every payout paid by
exactly one output, the one our row names, and nobody else paid. Our rows alone never judge.

SQLite, fakeredis and the simulated node in-process, as in test_batch_attacks.py. Blocks that
leave a transaction out (a stuck, low-fee transaction that miners skip) are mined on the
in-process node with `exclude`, so nothing here needs the `generateblock` RPC.

The review found three defects, fixed since; their tests are the last of each class: a foreign
double spend after a bump never re-queued the payouts (the wallet lists the other versions among
the conflicts), a bump dead by a coin it added took the still-valid original down with it (the
payout was paid twice), and one transaction the replacement check refused stopped the beat job
bumping any other.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from embit.networks import NETWORKS
from embit.psbt import PSBT, InputScope, OutputScope
from embit.script import address_to_scriptpubkey
from embit.transaction import TransactionInput, TransactionOutput
from sqlalchemy import update
from sqlalchemy.orm import Session

import devnode.spend as devnode_spend
from cli.addresses import external_address
from cli.regtest_node import RegtestNode
from devnode.server import RunningDevnode
from shared.core.errors import DomainError
from shared.core.models import Payout, PayoutState, Route, TxState
from shared.infra.db import session_scope
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.node.client import BumpPsbt
from shared.node.errors import NodeUnavailable
from shared.recovery.confirmations import track_confirmations
from shared.recovery.rebroadcast import rebroadcast_signed
from shared.sending.fee_bumping import BumpRefused, bump_stuck, bump_transaction
from shared.sending.payment_check import PaymentMismatch
from tests.unit.shared.sending.bumping import (
    AMOUNT,
    approved,
    bump_session,
    confirm,
    funded_node,
    live_txid,
    mine_without_mempool,
    pay_batch,
    payouts,
    run,
    states,
    stored_txids,
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


def mine_leaving_out(devnode: RunningDevnode, blocks: int, leave_out: Iterable[str]) -> None:
    """Blocks that do not take `leave_out` (and its descendants): what miners do with a
    transaction that pays too little. On the in-process node, under its lock."""
    state = devnode.node
    with state.lock:
        state.mine(blocks, state._burn_script, exclude=set(leave_out))


def mempool(node: RegtestNode) -> set[str]:
    return set(node.call("getrawmempool"))


def swap_in(node: RegtestNode, evict: str, raw_hex: str) -> None:
    """A miner's choice: `evict` leaves the mempool and the other version takes its place."""
    node.evict(evict)
    node.call("sendrawtransaction", raw_hex)


class Tampering:
    """A node whose `psbtbumpfee` answer is rewritten by `edit` before the engine sees it (a
    compromised node, or a proxy in front of it). The wallet then signs what it is given."""

    def __init__(self, inner: RegtestNode, edit: Callable[[PSBT], None]) -> None:
        self._inner, self._edit = inner, edit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def psbt_bump_fee(self, txid: str, *, fee_rate_sat_vb: int) -> BumpPsbt:
        real = self._inner.psbt_bump_fee(txid, fee_rate_sat_vb=fee_rate_sat_vb)
        psbt = PSBT.from_base64(real.psbt)
        self._edit(psbt)
        return BumpPsbt(psbt.to_base64(), real.old_fee_sats, real.fee_sats)


def is_mine(node: NodeClient, address: str) -> bool:
    return bool(node.get_address_info(address).get("ismine"))


def change_index(node: RegtestNode, psbt: PSBT) -> int:
    for i, out in enumerate(psbt.outputs):
        if is_mine(node, out.script_pubkey.address(NETWORKS["regtest"])):
            return i
    raise AssertionError("no change output")


def refuse_with_timeout() -> None:
    raise NodeUnavailable("timed out (the request never reached the node)")


# ---------------------------------------------------------------- payouts:approve: which txid


class TestWhichTxid:
    def test_bumping_every_old_version_of_a_chain_of_bumps_is_refused(
        self, session: Session, node: RegtestNode
    ) -> None:
        """An operator bumps A -> A' -> A'', then replays the bump on A and A' (an old link,
        a retried request): both are refused and nothing new is stored."""
        ids, a = pay_batch(session, node)
        settings = get_settings()
        a1 = bump_transaction(node, settings, a, fee_rate_sat_vb=10, actor="op").new_txid
        a2 = bump_transaction(node, settings, a1, fee_rate_sat_vb=20, actor="op").new_txid
        for old in (a, a1):
            with pytest.raises(BumpRefused) as refused:
                bump_transaction(node, settings, old, fee_rate_sat_vb=40, actor="op")
            assert refused.value.code == "already_replaced"
            assert a2 in refused.value.message  # the newest version: the one to bump
        assert stored_txids(session) == {a, a1, a2}
        confirm(node)
        assert live_txid(session, ids) == a2
        assert states(session, ids) == {S.CONFIRMED}
        assert_each_paid_once(session, node, ids)

    def test_bumping_a_version_while_its_payouts_are_only_signed_is_refused(
        self, session: Session, node: RegtestNode
    ) -> None:
        """The batch is stored but not yet broadcast (its send timed out before reaching the
        node): its txid is known (logs, the API) but there is nothing to replace yet."""
        ids = approved(session, 2)
        hooked = Hooked(node, "send_raw_transaction", refuse_with_timeout)
        run(hooked)  # type: ignore[arg-type]
        txid = live_txid(session, ids)
        assert states(session, ids) == {S.SIGNED}
        with pytest.raises(BumpRefused) as refused:
            bump_transaction(node, get_settings(), txid, fee_rate_sat_vb=10, actor="op")
        assert refused.value.code == "not_broadcast"
        rebroadcast_signed(node, get_settings())
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_concurrent_bumps_of_every_version_at_once_confirm_one(
        self, session: Session, node: RegtestNode
    ) -> None:
        """Eight requests at once, on the original and on the first bump, at rising rates."""
        ids, a = pay_batch(session, node)
        settings = get_settings()
        a1 = bump_transaction(node, settings, a, fee_rate_sat_vb=6, actor="op").new_txid
        node.set_latency("psbtbumpfee", 0.1)
        outcomes: list[str] = []

        def bump(txid: str, rate: int) -> None:
            try:
                done = bump_transaction(node, settings, txid, fee_rate_sat_vb=rate,
                                        actor=f"op{rate}")  # fmt: skip
                outcomes.append("won " + done.new_txid)
            except DomainError as exc:
                outcomes.append(exc.code)

        threads = [threading.Thread(target=bump, args=(txid, rate))
                   for rate, txid in enumerate([a, a1] * 4, start=10)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        node.set_latency("psbtbumpfee", 0)
        assert len(outcomes) == 8
        confirm(node)
        assert states(session, ids) == {S.CONFIRMED}
        assert_each_paid_once(session, node, ids)


# ---------------------------------------------------------------- races with other jobs


class TestRaces:
    def test_a_batch_holding_the_old_versions_change_makes_the_bump_wait(
        self, session: Session, node: RegtestNode
    ) -> None:
        """A batch run has funded itself from A's change (its coins are locked) and is about
        to persist when an operator bumps A: the bump must not go ahead (it would make the
        batch's input disappear)."""
        first, a = pay_batch(session, node)
        others = [f"{c['txid']}:{c['vout']}" for c in node.list_unspent(1)]
        node.lock_unspent(others)  # the batch can only fund from A's change
        second = approved(session, 2)
        seen: list[str] = []

        def bump_now() -> None:
            try:
                bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
                seen.append("bumped")
            except BumpRefused as exc:
                seen.append(exc.code)

        result = run(Hooked(node, "test_mempool_accept", bump_now))  # type: ignore[arg-type]
        assert seen == ["change_being_spent"], seen
        assert result.paid == 2
        child = live_txid(session, second)
        assert node.get_mempool_entry(child)["depends"] == [a]  # type: ignore[index]
        node.unlock_unspent(others)
        # Later bumps go through the child (CPFP); nothing pays twice.
        done = bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
        assert done.method == "cpfp"
        confirm(node)
        assert_each_paid_once(session, node, first + second)

    def test_a_batch_run_during_the_bump_cannot_fund_from_the_change_it_replaces(
        self, session: Session, node: RegtestNode
    ) -> None:
        first, a = pay_batch(session, node)
        others = [f"{c['txid']}:{c['vout']}" for c in node.list_unspent(1)]
        node.lock_unspent(others)
        second = approved(session, 2)
        results: list[Any] = []
        hooked = Hooked(node, "psbt_bump_fee", lambda: results.append(run(node)))
        done = bump_transaction(hooked, get_settings(), a, fee_rate_sat_vb=10, actor="op")  # type: ignore[arg-type]
        assert done.broadcast == "sent"
        assert results[0].paid == 0  # A's change was locked: nothing to fund with
        assert states(session, second) == {S.APPROVED}
        node.unlock_unspent(others)
        assert run(node).paid == 2
        confirm(node)
        assert_each_paid_once(session, node, first + second)

    def test_the_original_confirming_between_psbtbumpfee_and_the_persist(
        self, session: Session, node: RegtestNode
    ) -> None:
        """A miner takes A while the bump is being signed: the bump is stored (our rows did not
        know yet), its broadcast finds A in a block, and the payouts follow A."""
        ids, a = pay_batch(session, node)
        hooked = Hooked(node, "sign_psbt_with_wallet", lambda: node.mine(1))
        done = bump_transaction(hooked, get_settings(), a, fee_rate_sat_vb=10, actor="op")  # type: ignore[arg-type]
        assert done.broadcast in ("replaced", "conflict_unproven"), done
        track_confirmations(node, get_settings())
        rebroadcast_signed(node, get_settings())
        confirm(node)
        assert live_txid(session, ids) == a
        assert states(session, ids) == {S.CONFIRMED}
        assert tx_row(session, done.new_txid).state == TxState.REPLACED
        assert_each_paid_once(session, node, ids)

    def test_the_tracker_adopting_the_original_while_a_second_bump_is_signed(
        self, session: Session, node: RegtestNode
    ) -> None:
        """A' is live; a miner takes A instead and the tracker adopts it while an operator's
        bump of A' is between psbtbumpfee and its persist. The operator's bump must store
        nothing; the payouts follow A."""
        ids, a = pay_batch(session, node)
        a_hex = tx_row(session, a).raw_hex
        a1 = bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op").new_txid

        def miner_takes_the_original() -> None:
            swap_in(node, a1, a_hex)
            node.mine(1)
            track_confirmations(node, get_settings())

        hooked = Hooked(node, "sign_psbt_with_wallet", miner_takes_the_original)
        with pytest.raises(DomainError) as refused:
            bump_transaction(hooked, get_settings(), a1, fee_rate_sat_vb=20, actor="op")  # type: ignore[arg-type]
        assert refused.value.code in ("already_replaced", "already_confirmed")
        assert stored_txids(session) == {a, a1}
        confirm(node)
        assert live_txid(session, ids) == a
        assert states(session, ids) == {S.CONFIRMED}
        assert_each_paid_once(session, node, ids)

    def test_a_reorg_that_swaps_the_versions_twice(
        self, session: Session, node: RegtestNode
    ) -> None:
        """A' confirms; a reorg takes it out and A confirms; another reorg takes A out and A'
        confirms again. Every time the payouts name the version in the chain."""
        ids, a = pay_batch(session, node)
        a_hex = tx_row(session, a).raw_hex
        a1 = bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op").new_txid
        a1_hex = tx_row(session, a1).raw_hex
        confirm(node, 1)
        assert live_txid(session, ids) == a1

        node.reorg(1, exclude=[a1])
        swap_in(node, a1, a_hex)
        confirm(node, 1)
        assert live_txid(session, ids) == a
        assert_each_paid_once(session, node, ids)

        node.reorg(2, exclude=[a])
        swap_in(node, a, a1_hex)
        confirm(node, 1)
        assert live_txid(session, ids) == a1
        confirm(node, 3)
        assert states(session, ids) == {S.CONFIRMED}
        assert tx_row(session, a1).state == TxState.CONFIRMED
        assert tx_row(session, a).state == TxState.REPLACED
        assert_each_paid_once(session, node, ids)

    def test_a_refused_bump_racing_a_second_bump(
        self, session: Session, node: RegtestNode
    ) -> None:
        """While the node refuses A' for good (revert: A live again), a second operator bumps
        A and A'. Neither may store anything; afterwards A can be bumped again."""
        ids, a = pay_batch(session, node)
        codes: list[str] = []

        def rival() -> None:
            new = set(stored_txids(session)) - {a}
            for txid in [a, *new]:
                try:
                    bump_transaction(node, get_settings(), txid, fee_rate_sat_vb=15, actor="op2")
                    codes.append("bumped")
                except BumpRefused as exc:
                    codes.append(exc.code)

        node.fail_next("sendrawtransaction", -26, "non-mandatory-script-verify-flag (crafted)")
        hooked = Hooked(node, "send_raw_transaction", rival)
        done = bump_transaction(hooked, get_settings(), a, fee_rate_sat_vb=10, actor="op1")  # type: ignore[arg-type]
        assert codes == ["already_replaced", "not_broadcast"], codes
        assert done.broadcast == "rejected"
        assert live_txid(session, ids) == a
        assert tx_row(session, a).state == TxState.BROADCAST
        assert node.list_lock_unspent() == []
        again = bump_transaction(node, get_settings(), a, fee_rate_sat_vb=12, actor="op1")
        assert again.broadcast == "sent"
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_a_stored_bump_never_sent_while_the_original_confirms(
        self, session: Session, node: RegtestNode
    ) -> None:
        """The bump's send never reached the node (A' `signed`, A `replaced` in our rows but
        in the mempool); A confirms. The tracker watches neither row; the rebroadcast job must
        notice and the payouts follow A."""
        ids, a = pay_batch(session, node)
        hooked = Hooked(node, "send_raw_transaction", refuse_with_timeout)
        done = bump_transaction(hooked, get_settings(), a, fee_rate_sat_vb=10, actor="op")  # type: ignore[arg-type]
        assert done.broadcast == "unknown"
        assert a in mempool(node)
        confirm(node, 1)
        counts = rebroadcast_signed(node, get_settings())
        assert counts == {"replaced": 1}, counts
        confirm(node)
        assert live_txid(session, ids) == a
        assert states(session, ids) == {S.CONFIRMED}
        assert_each_paid_once(session, node, ids)


# ---------------------------------------------------------------- a hostile or failing node


class TestHostileNode:
    def _assert_nothing_stored(self, session: Session, node: RegtestNode, ids: list[uuid.UUID],
                               a: str) -> None:  # fmt: skip
        assert stored_txids(session) == {a}
        assert tx_row(session, a).state == TxState.BROADCAST
        assert live_txid(session, ids) == a
        assert node.list_lock_unspent() == []
        assert mempool(node) == {a}

    def test_a_psbt_that_adds_an_output_to_a_stranger_is_refused(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, a = pay_batch(session, node)
        stranger = external_address()

        def add_stranger(psbt: PSBT) -> None:
            change = psbt.outputs[change_index(node, psbt)]
            change.value -= 50_000
            out = TransactionOutput(50_000, address_to_scriptpubkey(stranger))
            psbt.outputs.append(OutputScope(vout=out))

        with pytest.raises(PaymentMismatch) as refused:
            bump_transaction(Tampering(node, add_stranger), get_settings(), a,  # type: ignore[arg-type]
                             fee_rate_sat_vb=10, actor="op")  # fmt: skip
        assert refused.value.code == "unexpected_outputs"
        self._assert_nothing_stored(session, node, ids, a)
        assert node.ledger(stranger) == []
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_a_psbt_that_swaps_the_original_input_for_another_coin_is_refused(
        self, session: Session, node: RegtestNode
    ) -> None:
        """The new version would spend a different coin of equal value: it would not
        conflict with A, and both could confirm."""
        ids, a = pay_batch(session, node)
        a_inputs = set(tx_row(session, a).inputs)
        spare = next(c for c in node.list_unspent(1) if f"{c['txid']}:{c['vout']}" not in a_inputs)

        def swap_input(psbt: PSBT) -> None:
            psbt.inputs[0] = InputScope(vin=TransactionInput(
                bytes.fromhex(spare["txid"]), int(spare["vout"]), sequence=0xFFFFFFFD))

        with pytest.raises(PaymentMismatch) as refused:
            bump_transaction(Tampering(node, swap_input), get_settings(), a,  # type: ignore[arg-type]
                             fee_rate_sat_vb=10, actor="op")  # fmt: skip
        assert refused.value.code == "replacement_drops_inputs"
        self._assert_nothing_stored(session, node, ids, a)
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_a_psbt_that_redirects_a_payout_to_another_payouts_destination_is_refused(
        self, session: Session, node: RegtestNode
    ) -> None:
        """Payout B (approved, not yet paid) has destination X; the tampered bump of A adds an
        output paying B's amount to X from A's change. Stored, it would pay B twice."""
        ids, a = pay_batch(session, node)
        (b,) = approved(session, 1, amount=AMOUNT + 500)
        (b_row,) = payouts(session, [b])

        def pay_b_too(psbt: PSBT) -> None:
            change = psbt.outputs[change_index(node, psbt)]
            change.value -= b_row.amount_sats
            out = TransactionOutput(b_row.amount_sats, address_to_scriptpubkey(b_row.destination))
            psbt.outputs.append(OutputScope(vout=out))

        with pytest.raises(PaymentMismatch) as refused:
            bump_transaction(Tampering(node, pay_b_too), get_settings(), a,  # type: ignore[arg-type]
                             fee_rate_sat_vb=10, actor="op")  # fmt: skip
        assert refused.value.code == "unexpected_outputs"
        self._assert_nothing_stored(session, node, ids, a)
        run(node)
        confirm(node)
        assert_each_paid_once(session, node, ids + [b])

    @pytest.mark.parametrize("method", ["psbtbumpfee", "walletprocesspsbt"])
    def test_a_lost_reply_before_the_persist_stores_nothing(
        self, session: Session, node: RegtestNode, method: str
    ) -> None:
        ids, a = pay_batch(session, node)
        node.drop_reply(method)
        with pytest.raises(NodeUnavailable):
            bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
        self._assert_nothing_stored(session, node, ids, a)
        done = bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
        assert done.broadcast == "sent"
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_a_lost_reply_of_lockunspent_stores_nothing(
        self, session: Session, node: RegtestNode
    ) -> None:
        """The lock happened, its reply was lost. Nothing is stored; the change stays locked
        (the orphaned-lock job frees it later), so the next bump waits."""
        ids, a = pay_batch(session, node)
        node.drop_reply("lockunspent")
        with pytest.raises(NodeUnavailable):
            bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
        assert stored_txids(session) == {a}
        assert live_txid(session, ids) == a
        left = node.list_lock_unspent()
        assert all(o.startswith(a + ":") for o in left), left
        with pytest.raises(BumpRefused) as waits:
            bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
        assert waits.value.code == "change_being_spent"
        node.unlock_unspent(left)
        bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
        confirm(node)
        assert_each_paid_once(session, node, ids)


# ---------------------------------------------------------------- payouts:create, manual route


class TestDestinationsAndRoutes:
    def test_a_child_paying_a_manual_payout_is_never_bumped_for_its_parent(
        self, session: Session, node: RegtestNode
    ) -> None:
        """A's change funds B; B's payouts are manual (their signer holds the keys). Bumping A
        would have to replace B: refused."""
        coins = [f"{c['txid']}:{c['vout']}" for c in node.list_unspent(1)]
        node.lock_unspent(coins[1:])
        first, a = pay_batch(session, node, 2)
        second, b = pay_batch(session, node, 1)
        node.unlock_unspent(coins[1:])
        with session_scope() as s:
            s.execute(update(Payout).where(Payout.id.in_(second)).values(route=Route.MANUAL))
        with pytest.raises(BumpRefused) as refused:
            bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op")
        assert refused.value.code == "manual_payout"
        assert stored_txids(session) == {a, b}
        assert node.list_lock_unspent() == []
        confirm(node)
        assert_each_paid_once(session, node, first + second)

    def _payout_to_an_old_change_address(
        self, session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
    ) -> tuple[list[uuid.UUID], str]:
        """A `payouts:create` holder names an earlier batch's (public, on-chain) change
        address as a destination. The wallet's change goes last in the new batch, so the
        payout's output comes first."""
        first, earlier = pay_batch(session, node, 1)
        decoded = node.decode_raw_transaction(tx_row(session, earlier).raw_hex)
        (old_change,) = [o for o in decoded.outputs if o.address and is_mine(node, o.address)]
        assert old_change.address is not None
        confirm(node, 1)
        poisoned = approved(session, 1, amount=AMOUNT + 7, destination=old_change.address)
        with monkeypatch.context() as patched:
            patched.setattr(devnode_spend.random, "randint", lambda low, high: high)
            assert run(node).paid == 1
        return first + poisoned, live_txid(session, poisoned)

    def test_a_payout_to_an_old_change_address_is_never_shortened_by_a_bump(
        self, session: Session, node: RegtestNode, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The wallet takes the payout's output for its change and takes the fee from it:
        the check must refuse, and the payout is paid its full amount once."""
        ids, poisoned = self._payout_to_an_old_change_address(session, node, monkeypatch)
        try:
            done = bump_transaction(node, get_settings(), poisoned, fee_rate_sat_vb=10,
                                    actor="op")  # fmt: skip
            outcome = done.broadcast
        except DomainError as exc:
            outcome = exc.code
        assert outcome in ("wrong_payment", "sent"), outcome
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_one_unbumpable_transaction_does_not_stop_the_beat_job_bumping_the_others(
        self, session: Session, node: RegtestNode, devnode: RunningDevnode,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        ids, poisoned = self._payout_to_an_old_change_address(session, node, monkeypatch)
        others, healthy = pay_batch(session, node, 2)
        assert node.get_mempool_entry(healthy)["depends"] == []  # type: ignore[index]
        node.set_fee_estimate(12)
        mine_without_mempool(node, 2)
        report = bump_stuck(node, get_settings())
        assert len(report.bumped) == 1 and report.bumped[0] != healthy
        assert live_txid(session, others) == report.bumped[0]
        confirm(node)
        assert_each_paid_once(session, node, ids + others)


# ---------------------------------------------------------------- dead proofs after a bump


class TestDeadProofs:
    def _dead_depth(self) -> int:
        return get_settings().dead_depth

    def test_control_a_foreign_double_spend_of_an_unbumped_batch_requeues_it_once(
        self, session: Session, node: RegtestNode
    ) -> None:
        """Without a bump the dead proof works: buried DEAD_DEPTH deep, the payouts are
        re-queued and paid once by a new batch."""
        ids, a = pay_batch(session, node)
        node.double_spend(a, node.get_new_address())  # someone with the keys sweeps it
        node.mine(self._dead_depth())
        track_confirmations(node, get_settings())
        assert states(session, ids) == {S.APPROVED}
        assert run(node).paid == 3
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_a_foreign_double_spend_after_a_bump_requeues_the_payouts_once(
        self, session: Session, node: RegtestNode
    ) -> None:
        ids, a = pay_batch(session, node)
        a1 = bump_transaction(node, get_settings(), a, fee_rate_sat_vb=10, actor="op").new_txid
        node.double_spend(a1, node.get_new_address())  # replaces A' (and so A) for good
        node.mine(self._dead_depth())
        for _ in range(3):  # however many tracker runs
            track_confirmations(node, get_settings())
            rebroadcast_signed(node, get_settings())
        assert states(session, ids) == {S.APPROVED}, "stuck: never re-queued"
        assert run(node).paid == 3
        confirm(node)
        assert_each_paid_once(session, node, ids)

    def test_a_bump_dead_by_its_added_input_while_the_original_lives_pays_once(
        self, session: Session, node: RegtestNode, devnode: RunningDevnode
    ) -> None:
        """The hot wallet holds a small coin and a big one. Batch A spends the small coin and
        leaves little change, so its bump must add the big coin. The node refuses the bump
        for now ('mempool full': it stays `signed`, A stays in the mempool). The next batch D
        funds itself from the big coin (the bump's lock on it was lost in a node restart) and
        confirms; A, at its low fee, is left out of block after block. Then the rebroadcast
        job finds the bump dead."""
        node.call("createwallet", "lone")
        lone = RegtestNode(f"{devnode.url}/wallet/lone", timeout=10, read_retries=0)
        node.send_to_address(lone.get_new_address(), 100_000)
        node.send_to_address(lone.get_new_address(), 1_000_000)
        node.mine(1)
        big = [f"{c['txid']}:{c['vout']}" for c in lone.list_unspent(1)
               if round(float(c["amount"]) * 1e8) == 1_000_000]  # fmt: skip
        lone.lock_unspent(big)
        ids = approved(session, 1, amount=95_000)
        assert run(lone).paid == 1
        lone.unlock_unspent(big)
        a = live_txid(session, ids)
        a_inputs = set(tx_row(session, a).inputs)

        node.fail_next("sendrawtransaction", -26, "mempool full")
        done = bump_transaction(lone, get_settings(), a, fee_rate_sat_vb=80, actor="op")
        assert done.broadcast == "transient"
        a1_inputs = set(tx_row(session, done.new_txid).inputs)
        assert a_inputs < a1_inputs and set(big) <= a1_inputs  # the bump added the big coin
        assert a in mempool(node)

        # The bump locked the coin it added, but bitcoind keeps `lockunspent` locks in memory:
        # a restart forgets them (mempool.dat keeps A), and nothing locks that coin again.
        node.restart()
        later = approved(session, 1, amount=40_000)
        assert run(lone).paid == 1
        d = live_txid(session, later)
        assert set(big) <= set(tx_row(session, d).inputs)
        mine_leaving_out(devnode, self._dead_depth(), [a])  # A pays too little for miners
        assert a in mempool(node)

        rebroadcast_signed(lone, get_settings())
        track_confirmations(lone, get_settings())
        # A is valid and in the mempool: its payout must not be paid again. Today it is
        # re-queued here, and the next batch pays it a second time.
        run(lone)
        node.mine(1)  # fees fall: A confirms
        track_confirmations(lone, get_settings())
        assert_each_paid_once(session, node, ids + later)
