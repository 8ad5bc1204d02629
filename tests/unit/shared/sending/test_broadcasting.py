"""Broadcasting stored bytes and proving a transaction dead, against the simulated node."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from cli.addresses import external_address
from shared.core.models import Payout, PayoutState, Route, Transaction, TxState
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.sending.broadcasting import BroadcastOutcome, broadcast_persisted, prove_dead
from tests.unit.shared.factories import make_payout

S = PayoutState
DEAD_DEPTH = get_settings().dead_depth


def signed_payout(session: Session, node: NodeClient, amount: int = 50_000) -> Transaction:
    destination = external_address()
    raw = node.create_raw_transaction({destination: amount})
    funded = node.fund_raw_transaction(raw, fee_rate_sat_vb=2)
    signed = node.sign_raw_transaction_with_wallet(funded.hex)
    decoded = node.decode_raw_transaction(signed)
    tx = Transaction(
        id=uuid.uuid4(),
        txid=decoded.txid,
        raw_hex=signed,
        fee_sats=funded.fee_sats,
        inputs=decoded.inputs,
        state=TxState.SIGNED,
    )
    session.add(tx)
    session.commit()
    make_payout(session, state=S.SIGNED, route=Route.AUTOMATIC, amount_sats=amount, tx_id=tx.id)
    return tx


def payout_of(session: Session, tx: Transaction) -> Payout:
    session.expire_all()
    return session.query(Payout).filter_by(tx_id=tx.id).one()


def test_resending_the_same_bytes_is_harmless_and_moves_to_broadcast(
    session: Session, node: NodeClient
) -> None:
    tx = signed_payout(session, node)
    first = broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100)
    again = broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100)
    session.commit()
    assert first == BroadcastOutcome.SENT
    assert again in (BroadcastOutcome.SENT, BroadcastOutcome.ALREADY_KNOWN)
    assert payout_of(session, tx).state == S.BROADCAST
    node.generate_to_address(1, node.get_new_address())
    mined = broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100)
    assert mined == BroadcastOutcome.ALREADY_KNOWN  # -27: outputs already in the UTXO set


def test_a_dropped_reply_proves_nothing_and_leaves_it_signed(
    session: Session, node: NodeClient
) -> None:
    tx = signed_payout(session, node)
    node.call("devnode_drop_reply", "sendrawtransaction", 1)
    outcome = broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100)
    session.commit()
    assert outcome == BroadcastOutcome.UNKNOWN
    assert payout_of(session, tx).state == S.SIGNED
    assert node.get_mempool_entry(tx.txid) is not None  # it did reach the node


def test_only_a_confirmed_foreign_spend_proves_a_transaction_dead(
    session: Session, node: NodeClient
) -> None:
    tx = signed_payout(session, node)
    broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100)
    session.commit()
    foreign = node.call("devnode_double_spend", tx.txid)["txid"]
    assert prove_dead(node, tx.txid, list(tx.inputs)) is None  # in the mempool: may still lose
    node.generate_to_address(1, node.get_new_address())
    proof = prove_dead(node, tx.txid, list(tx.inputs))
    assert proof is not None and proof.outpoint in tx.inputs
    assert proof.conflicts == [foreign] and foreign in proof.reason(tx.txid)


def test_a_proven_dead_transaction_waits_until_the_conflict_is_buried_then_requeues(
    session: Session, node: NodeClient
) -> None:
    tx = signed_payout(session, node)
    payout_id = payout_of(session, tx).id
    node.send_raw_transaction(tx.raw_hex)
    foreign = node.call("devnode_double_spend", tx.txid)["txid"]
    node.generate_to_address(1, node.get_new_address())
    outcome = broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100)
    session.commit()
    # Dead, but one block deep: a reorg could bring it back, so nothing moves yet.
    assert outcome == BroadcastOutcome.DEAD_WAITING
    assert payout_of(session, tx).state == S.SIGNED
    session.refresh(tx)
    assert f"once the conflict is {DEAD_DEPTH} blocks deep (now 1)" in (tx.last_error or "")

    node.generate_to_address(DEAD_DEPTH - 1, node.get_new_address())
    outcome = broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100)
    session.commit()
    assert outcome == BroadcastOutcome.DEAD
    session.expire_all()
    payout = session.get(Payout, payout_id)
    assert payout is not None
    assert (payout.state, payout.tx_id, payout.vout, payout.claim_token) == (
        S.APPROVED, None, None, None
    )
    assert payout.attempts == 0
    assert "re-queued" in (payout.last_error or "") and foreign in (payout.last_error or "")
    session.refresh(tx)
    assert tx.state == "conflicted"


def test_a_conflict_that_pays_the_payout_is_reported_as_paid(
    session: Session, node: NodeClient
) -> None:
    tx = signed_payout(session, node, amount=70_000)
    payout = payout_of(session, tx)
    # Another transaction on the same inputs paying the same output (a released manual PSBT
    # that someone broadcast themselves) confirms first.
    twin = node.create_raw_transaction({payout.destination: 70_000}, inputs=list(tx.inputs))
    twin = node.fund_raw_transaction(twin, fee_rate_sat_vb=5, add_inputs=False).hex
    twin_txid = node.send_raw_transaction(node.sign_raw_transaction_with_wallet(twin))
    node.generate_to_address(DEAD_DEPTH, node.get_new_address())

    assert broadcast_persisted(session, node, tx, actor="t", max_fee_rate_sat_vb=100) == (
        BroadcastOutcome.DEAD
    )
    session.commit()
    failed = payout_of(session, tx)
    assert failed.state == S.FAILED
    assert f"looks PAID by {twin_txid}" in (failed.last_error or "")
