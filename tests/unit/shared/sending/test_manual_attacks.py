"""Attacks on the manual route by key holders, judged by the simulated node's ledger/mempool.

Each test plays someone holding a `payouts:sign` key (sometimes with `payouts:create` /
`payouts:approve` too) who tries to get a payout paid twice, a stranger paid, or the system
stuck, and asserts the safe outcome. Helpers and fixtures come from test_manual.py.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from embit.script import Script
from embit.transaction import Transaction as EmbitTx
from embit.transaction import TransactionOutput
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cli.addresses import external_address
from shared.core.errors import DomainError, ErrorKind
from shared.core.models import Payout, Transaction, utcnow
from shared.infra.unit_of_work import UnitOfWork
from shared.intake import payouts as intake
from shared.intake.payouts import InvalidState
from shared.node import NodeClient
from shared.node.errors import NodeError
from shared.sending import manual
from tests.unit.shared.sending.test_manual import (
    AMOUNT,
    FEE,
    S,
    claim,
    claimed,
    manual_payout,
    node,
    other_coin,
    refused,
    session,
    spend,
    submit,
    value_of,
)

__all__ = ["node", "session"]  # fixtures re-exported for pytest


def ledger(node: NodeClient, address: str) -> list[dict[str, Any]]:
    """Every output to `address` in the active chain or the mempool (the node's view)."""
    return list(node.call("devnode_ledger", address))


def mempool(node: NodeClient) -> list[str]:
    return list(node.call("getrawmempool"))


def state_of(session: Session, payout: Payout) -> str:
    session.expire_all()
    row = session.get(Payout, payout.id)
    assert row is not None
    return str(row.state)


def expire_claim(session: Session, payout: Payout) -> None:
    session.execute(
        update(Payout)
        .where(Payout.id == payout.id)
        .values(lease_until=utcnow() - timedelta(seconds=5))
    )
    session.commit()


def with_output_script(node: NodeClient, unsigned_hex: str, n: int, script: bytes) -> str:
    """Replace output `n`'s scriptPubKey of an unsigned transaction, then wallet-sign it."""
    tx = EmbitTx.parse(bytes.fromhex(unsigned_hex))
    tx.vout[n].script_pubkey = Script(script)
    return node.sign_raw_transaction_with_wallet(tx.serialize().hex())


def broadcast_copy_then_mine(node: NodeClient, signed_psbt: str) -> bool:
    """Broadcast a kept copy of a signed PSBT (as its holder, or anyone, could), then mine a
    block; whether the node accepted the copy."""
    raw = node.finalize_psbt(signed_psbt)[0]
    assert raw is not None
    try:
        node.send_raw_transaction(raw)
    except NodeError:
        accepted = False
    else:
        accepted = True
    node.generate_to_address(1, node.get_new_address())
    return accepted


# ---------------------------------------------------------------- crafted outputs


class TestCraftedOutputs:
    def test_two_outputs_each_paying_the_full_amount_are_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        stand_in = external_address()
        total = sum(value_of(node, i) for i in held.inputs)
        unsigned = node.create_raw_transaction(
            {payout.destination: AMOUNT, stand_in: AMOUNT,
             node.get_new_address(): total - 2 * AMOUNT - FEE},
            held.inputs,
        )  # fmt: skip
        script = node.get_address_info(stand_in)["scriptPubKey"]
        paying = node.get_address_info(payout.destination)["scriptPubKey"]
        raw = node.sign_raw_transaction_with_wallet(unsigned.replace(script, paying))
        refused(session, node, payout, "wrong_payment", tx_hex=raw)
        assert ledger(node, payout.destination) == []

    @pytest.mark.parametrize(
        "script_hex",
        [
            "5120" + "11" * 32,  # P2TR to a key nobody here holds
            "5220" + "22" * 32,  # witness v2 (unknown version, standard as an output)
            "a914" + "33" * 20 + "87",  # P2SH
            "21" + "02" + "44" * 32 + "ac",  # bare P2PK: no address in decoderawtransaction
            "5121" + "02" + "55" * 32 + "51ae",  # bare 1-of-1 multisig
            "6a04deadbeef",  # OP_RETURN (money burnt or data)
        ],
        ids=["p2tr", "witness_v2", "p2sh", "p2pk", "bare_multisig", "op_return"],
    )
    def test_an_exotic_second_output_is_refused_not_a_crash(
        self, session: Session, node: NodeClient, script_hex: str
    ) -> None:
        payout, held = claimed(session, node)
        total = sum(value_of(node, i) for i in held.inputs)
        value = 0 if script_hex.startswith("6a") else 10_000
        unsigned = node.create_raw_transaction(
            {payout.destination: AMOUNT, external_address(): value or 1000,
             node.get_new_address(): total - AMOUNT - (value or 1000) - FEE},
            held.inputs,
        )  # fmt: skip
        if not value:  # OP_RETURN carries nothing; the sat goes to change instead
            tx = EmbitTx.parse(bytes.fromhex(unsigned))
            tx.vout[1].value = 0
            tx.vout[2].value += 1000
            unsigned = tx.serialize().hex()
        raw = with_output_script(node, unsigned, 1, bytes.fromhex(script_hex))
        refused(session, node, payout, "unexpected_outputs", tx_hex=raw)

    def test_change_to_a_watch_only_or_foreign_key_address_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        # An address the node can describe (valid, solvable shape) but whose key the hot
        # wallet does not hold: a P2WPKH of a random key.
        payout, held = claimed(session, node)
        total = sum(value_of(node, i) for i in held.inputs)
        unsigned = node.create_raw_transaction(
            {payout.destination: AMOUNT, external_address(): total - AMOUNT - FEE}, held.inputs
        )
        raw = node.sign_raw_transaction_with_wallet(unsigned)
        refused(session, node, payout, "unexpected_outputs", tx_hex=raw)

    @pytest.mark.parametrize("garbage", ["", "zz", "00", "02000000", "ab" * 5000])
    def test_malformed_transaction_hex_is_a_422(
        self, session: Session, node: NodeClient, garbage: str
    ) -> None:
        payout = manual_payout(session)
        claim(session, node, payout)
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, tx_hex=garbage)
        assert caught.value.kind == ErrorKind.INVALID, caught.value.message
        assert mempool(node) == []

    def test_a_transaction_with_no_inputs_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        payout = manual_payout(session)
        claim(session, node, payout)
        tx = EmbitTx(version=2, vin=[], vout=[
            TransactionOutput(AMOUNT, Script(bytes.fromhex(
                node.get_address_info(payout.destination)["scriptPubKey"])))
        ])  # fmt: skip
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, tx_hex=tx.serialize().hex())
        assert caught.value.kind == ErrorKind.INVALID
        assert mempool(node) == []


# ---------------------------------------------------------------- inputs of other payouts


class TestOtherPayoutsInputs:
    def test_spending_another_manual_payouts_reserved_inputs_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        mine = manual_payout(session)
        theirs = manual_payout(session, amount=AMOUNT + 1)
        held_mine = claim(session, node, mine)
        held_theirs = claim(session, node, theirs, key="signer2")
        assert not set(held_mine.inputs) & set(held_theirs.inputs)
        node.unlock_unspent(held_theirs.inputs)  # the signer has the keys; locks are advisory
        raw = spend(node, held_theirs.inputs, {mine.destination: AMOUNT})
        refused(session, node, mine, "must_spend_reserved_inputs", tx_hex=raw)
        mixed = spend(node, [*held_mine.inputs, *held_theirs.inputs], {mine.destination: AMOUNT})
        refused(session, node, mine, "unreserved_inputs", tx_hex=mixed)

    def test_a_transaction_for_this_payout_cannot_replace_another_payouts_broadcast(
        self, session: Session, node: NodeClient
    ) -> None:
        # The other payout's transaction is in the mempool; ours would double-spend its input
        # with a higher fee (full RBF) and evict it.
        other = manual_payout(session, amount=AMOUNT + 7)
        held_other = claim(session, node, other, key="signer2")
        total = sum(value_of(node, i) for i in held_other.inputs)
        signed_other, _ = node.wallet_process_psbt(held_other.psbt)
        done = submit(session, node, other, key="signer2", psbt=signed_other)
        assert done.state == "broadcast"
        mine = manual_payout(session)
        claim(session, node, mine)
        outs = {mine.destination: AMOUNT, node.get_new_address(): total - AMOUNT - 20_000}
        raw = node.sign_raw_transaction_with_wallet(
            node.create_raw_transaction(outs, held_other.inputs)
        )
        with pytest.raises(DomainError) as caught:
            submit(session, node, mine, tx_hex=raw)
        assert caught.value.code == "must_spend_reserved_inputs"
        assert mempool(node) == [done.txid]


# ---------------------------------------------------------------- claims, races, takeovers


class TestClaimRaces:
    def test_the_old_holder_cannot_submit_after_a_takeover(
        self, session: Session, node: NodeClient
    ) -> None:
        payout = manual_payout(session)
        first = claim(session, node, payout, key="signer")
        old_signed, _ = node.wallet_process_psbt(first.psbt)
        expire_claim(session, payout)
        second = claim(session, node, payout, key="signer2")
        assert second.inputs == first.inputs  # same reserved coins: the two PSBTs conflict
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, key="signer", psbt=old_signed)
        assert caught.value.kind == ErrorKind.CONFLICT
        assert mempool(node) == []
        new_signed, _ = node.wallet_process_psbt(second.psbt)
        done = submit(session, node, payout, key="signer2", psbt=new_signed)
        assert done.state == "broadcast"
        # The old holder broadcasts his copy himself: the node refuses the conflict.
        assert not broadcast_copy_then_mine(node, old_signed)
        assert len(ledger(node, payout.destination)) == 1

    def test_a_submit_racing_a_takeover_is_fenced_by_the_claim_token(
        self, session: Session, node: NodeClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        payout = manual_payout(session)
        first = claim(session, node, payout, key="signer")
        old_signed, _ = node.wallet_process_psbt(first.psbt)
        real = manual._accepted_by_node
        took_over: list[manual.ManualClaim] = []

        def slow_check(*args: Any) -> Any:
            result = real(*args)
            if not took_over:  # the lease runs out and signer2 takes over meanwhile
                expire_claim(session, payout)
                took_over.append(claim(session, node, payout, key="signer2"))
            return result

        monkeypatch.setattr(manual, "_accepted_by_node", slow_check)
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, key="signer", psbt=old_signed)
        assert caught.value.kind == ErrorKind.CONFLICT
        assert mempool(node) == []
        assert session.scalars(select(Transaction)).all() == []
        monkeypatch.setattr(manual, "_accepted_by_node", real)
        new_signed, _ = node.wallet_process_psbt(took_over[0].psbt)
        assert submit(session, node, payout, key="signer2", psbt=new_signed).state == "broadcast"
        assert len(ledger(node, payout.destination)) == 1

    def test_same_key_taking_over_its_own_expired_claim_fences_the_old_submit(
        self, session: Session, node: NodeClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        payout = manual_payout(session)
        first = claim(session, node, payout)
        old_signed, _ = node.wallet_process_psbt(first.psbt)
        real = manual._accepted_by_node
        again: list[manual.ManualClaim] = []

        def slow_check(*args: Any) -> Any:
            result = real(*args)
            if not again:
                expire_claim(session, payout)
                again.append(claim(session, node, payout))
            return result

        monkeypatch.setattr(manual, "_accepted_by_node", slow_check)
        with pytest.raises(DomainError):
            submit(session, node, payout, psbt=old_signed)
        assert mempool(node) == []

    def test_two_different_transactions_submitted_at_once_for_one_claim_pay_once(
        self, session: Session, node: NodeClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        payout, held = claimed(session, node)
        signed, _ = node.wallet_process_psbt(held.psbt)
        other = spend(node, held.inputs, {payout.destination: AMOUNT})  # other change address
        real = manual._accepted_by_node
        inner: list[manual.Submitted] = []

        def racing(*args: Any) -> Any:
            result = real(*args)
            if not inner:  # a second request of the same holder lands meanwhile
                monkeypatch.setattr(manual, "_accepted_by_node", real)
                inner.append(submit(session, node, payout, tx_hex=other))
            return result

        monkeypatch.setattr(manual, "_accepted_by_node", racing)
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, psbt=signed)
        assert caught.value.kind == ErrorKind.CONFLICT
        assert mempool(node) == [inner[0].txid]
        assert len(session.scalars(select(Transaction)).all()) == 1
        assert len(ledger(node, payout.destination)) == 1

    def test_submit_after_release_is_refused_and_the_next_psbt_conflicts(
        self, session: Session, node: NodeClient
    ) -> None:
        payout = manual_payout(session)
        first = claim(session, node, payout)
        old_signed, _ = node.wallet_process_psbt(first.psbt)
        manual.release(UnitOfWork(session), payout.id, "signer")
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, psbt=old_signed)
        assert caught.value.kind == ErrorKind.CONFLICT
        assert mempool(node) == []
        second = claim(session, node, payout, key="signer2")
        assert second.inputs == first.inputs
        new_signed, _ = node.wallet_process_psbt(second.psbt)
        assert submit(session, node, payout, key="signer2", psbt=new_signed).state == "broadcast"
        assert not broadcast_copy_then_mine(node, old_signed)
        assert len(ledger(node, payout.destination)) == 1

    def test_a_second_submit_after_success_is_refused(
        self, session: Session, node: NodeClient
    ) -> None:
        payout, held = claimed(session, node)
        signed, _ = node.wallet_process_psbt(held.psbt)
        other = spend(node, held.inputs, {payout.destination: AMOUNT}, change=None)
        first = submit(session, node, payout, psbt=signed)
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, tx_hex=other)
        assert caught.value.kind == ErrorKind.CONFLICT
        assert mempool(node) == [first.txid]


# ---------------------------------------------------------------- cancel / approve keys


class TestCancelWhilePsbtOut:
    def test_a_claimed_manual_payout_cannot_be_cancelled(
        self, session: Session, node: NodeClient
    ) -> None:
        payout = manual_payout(session)
        claim(session, node, payout)
        with pytest.raises(InvalidState):
            intake.cancel(session, payout.id, "treasury")
        session.rollback()
        assert state_of(session, payout) == S.CLAIMED

    def test_cancel_after_release_with_a_signed_psbt_out_never_pays_the_destination_twice(
        self, session: Session, node: NodeClient
    ) -> None:
        """A signer signs the PSBT (keeping a copy) and releases; the approver cancels the
        payout and the business re-creates it; the copy is broadcast later."""
        payout = manual_payout(session)
        first = claim(session, node, payout)
        old_signed, _ = node.wallet_process_psbt(first.psbt)
        manual.release(UnitOfWork(session), payout.id, "signer")
        try:
            intake.cancel(session, payout.id, "treasury", "wrong amount, will re-issue")
            session.commit()
        except InvalidState as refusal:
            session.rollback()
            assert "PSBT" in refusal.message
            return  # refused: a payout whose PSBT was handed out is not cancelled blindly
        assert state_of(session, payout) == S.CANCELLED
        again = manual_payout(session)
        again.destination = payout.destination  # the same person and amount, re-issued
        session.commit()
        held = claim(session, node, again, key="signer2")
        assert not set(held.inputs) & set(first.inputs)  # nothing ties the two together
        signed, _ = node.wallet_process_psbt(held.psbt)
        submit(session, node, again, key="signer2", psbt=signed)
        broadcast_copy_then_mine(node, old_signed)  # the released copy, by anyone
        paid = ledger(node, payout.destination)
        assert len(paid) == 1, f"destination paid {len(paid)} times: {paid}"

    def test_a_node_restart_does_not_let_a_worker_style_build_reuse_reserved_inputs(
        self, session: Session, node: NodeClient
    ) -> None:
        """Reserved inputs are protected by in-memory wallet locks only: after a node restart
        another claim may pick the same coins. That is safe (the two conflict), so check that
        at most one of the two transactions ever pays."""
        payout = manual_payout(session)
        first = claim(session, node, payout)
        old_signed, _ = node.wallet_process_psbt(first.psbt)
        manual.release(UnitOfWork(session), payout.id, "signer")
        node.call("devnode_restart")
        other = manual_payout(session, amount=AMOUNT + 3)
        held = claim(session, node, other, key="signer2")
        signed, _ = node.wallet_process_psbt(held.psbt)
        submit(session, node, other, key="signer2", psbt=signed)
        broadcast_copy_then_mine(node, old_signed)
        assert len(ledger(node, payout.destination)) <= 1
        assert len(ledger(node, other.destination)) <= 1


def test_an_unreserved_coin_alone_is_refused_even_paying_exactly(
    session: Session, node: NodeClient
) -> None:
    payout, held = claimed(session, node)
    raw = spend(node, [other_coin(node, held.inputs)], {payout.destination: AMOUNT}, change=None)
    refused(session, node, payout, "must_spend_reserved_inputs", tx_hex=raw)


def signed_with(node: NodeClient, psbt: str, sighash: str) -> str:
    result = node.call("walletprocesspsbt", psbt, True, sighash)
    assert result["complete"], result
    return str(result["hex"])


class TestSighash:
    """A signature that does not commit to every output lets anyone who sees the transaction
    (any mempool observer, under full RBF) rewrite the uncommitted outputs and re-broadcast it
    with a slightly higher fee: money leaves to an address no payout names."""

    @pytest.mark.parametrize(
        "sighash", ["NONE", "NONE|ANYONECANPAY", "SINGLE", "SINGLE|ANYONECANPAY"]
    )
    def test_a_signature_not_committing_to_all_outputs_cannot_be_stolen_from(
        self, session: Session, node: NodeClient, sighash: str
    ) -> None:
        payout, held = claimed(session, node)
        raw = signed_with(node, held.psbt, sighash)
        try:
            done = submit(session, node, payout, tx_hex=raw)
        except DomainError as refusal:
            assert refusal.code == "sighash_not_all", refusal.message
            assert mempool(node) == []
            return  # refused: nothing can be rewritten
        assert done.txid in mempool(node)
        # A stranger watching the mempool rewrites what the signatures do not cover.
        thief = external_address()
        tx = EmbitTx.parse(bytes.fromhex(raw))
        thief_script = Script(bytes.fromhex(node.get_address_info(thief)["scriptPubKey"]))
        uncommitted = [
            n for n in range(len(tx.vout)) if not (sighash.startswith("SINGLE") and n == 0)
        ]
        for n in uncommitted:
            tx.vout[n].script_pubkey = thief_script
        tx.vout[uncommitted[0]].value -= 5_000  # a higher fee, so the replacement wins
        with contextlib.suppress(NodeError):
            node.send_raw_transaction(tx.serialize().hex())
        node.generate_to_address(1, node.get_new_address())
        assert ledger(node, thief) == [], f"{sighash}: a stranger took the payout's coins"
        assert len(ledger(node, payout.destination)) == 1

    @pytest.mark.parametrize("sighash", ["ALL|ANYONECANPAY"])
    def test_anyonecanpay_is_refused(self, session: Session, node: NodeClient, sighash: str
                                     ) -> None:  # fmt: skip
        # ALL|ANYONECANPAY lets anyone add inputs: the txid we stored would never confirm.
        payout, held = claimed(session, node)
        with pytest.raises(DomainError) as caught:
            submit(session, node, payout, tx_hex=signed_with(node, held.psbt, sighash))
        assert caught.value.code == "sighash_not_all"
        assert mempool(node) == []

    def test_sighash_all_in_a_psbt_is_accepted(self, session: Session, node: NodeClient) -> None:
        payout, held = claimed(session, node)
        signed = node.call("walletprocesspsbt", held.psbt, True, "ALL")["psbt"]
        assert submit(session, node, payout, psbt=signed).state == "broadcast"
