"""Versions of one payment: the original transaction and its fee bumps (docs/architecture.md §6).

A fee bump (RBF) is the one place a payout legitimately gets a second transaction. Every version
spends every input of the one it replaces, so at most one of them can ever confirm (§5.2). All
versions are rows in `transactions` sharing `original_txid`; `payouts.tx_id` names the one that
counts now: the newest, or once one is in a block, the one that confirmed. Which payouts each
version pays, by which output, is in `transaction_payouts`.

This module keeps `payouts.tx_id` pointing at the right version:
- `settle` — a version other than the live one is in a block (a miner took the original, or a
  reorg swapped them): adopt it; the others end `replaced`.
- `revert_refused_bump` — the node refused a bump for good: the version it replaced is live again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from shared.core.claims import move_payouts
from shared.core.models import Payout, PayoutState, Transaction, TxState
from shared.core.state_machine import transition_many, transition_tx
from shared.node import NodeClient

log = logging.getLogger(__name__)
S = PayoutState


def has_versions(session: Session, tx: Transaction) -> bool:
    """True when `tx` is a bump, or has been bumped (one indexed lookup)."""
    if tx.original_txid is not None:
        return True
    return bool(
        session.execute(select(exists().where(Transaction.original_txid == tx.txid))).scalar()
    )


def versions_of(session: Session, tx: Transaction) -> list[Transaction]:
    """Every stored version of `tx`'s payment, oldest first (just `[tx]` when never bumped)."""
    root = tx.family_txid
    return list(
        session.execute(
            select(Transaction)
            .where(or_(Transaction.txid == root, Transaction.original_txid == root))
            .order_by(Transaction.created_at, Transaction.id)
        ).scalars()
    )


def version_txids(session: Session, tx_row_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """For each transaction row: the txids of all versions of its payment, oldest first."""
    if not tx_row_ids:
        return {}
    rows = session.execute(
        select(Transaction.id, Transaction.txid, Transaction.original_txid).where(
            Transaction.id.in_(tx_row_ids)
        )
    ).all()
    roots = {row.id: row.original_txid or row.txid for row in rows}
    family_rows = session.execute(
        select(Transaction.txid, Transaction.original_txid)
        .where(
            or_(
                Transaction.txid.in_(set(roots.values())),
                Transaction.original_txid.in_(set(roots.values())),
            )
        )
        .order_by(Transaction.created_at, Transaction.id)
    ).all()
    by_root: dict[str, list[str]] = {}
    for row in family_rows:
        by_root.setdefault(row.original_txid or row.txid, []).append(row.txid)
    return {row_id: by_root.get(root, [root]) for row_id, root in roots.items()}


def replaced_by(session: Session, txid: str) -> str | None:
    """The newest version that replaces `txid` directly, if any."""
    return session.execute(
        select(Transaction.txid)
        .where(Transaction.replaces_txid == txid)
        .order_by(Transaction.created_at.desc(), Transaction.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def settle(session: Session, node: NodeClient, live: Transaction, *, actor: str) -> Transaction:
    """If another version of `live`'s payment is in a block, make it the live one.

    Returns the version the payouts name afterwards. Only one version can be in the active
    chain (they spend the same inputs), so the first with confirmations > 0 is the winner.
    """
    if not has_versions(session, live):
        return live
    for version in versions_of(session, live):
        if version.id == live.id or version.state == TxState.CONFLICTED:
            continue
        # The wallet's view first (gettransaction), as broadcasting.chain_view does.
        info = node.get_transaction(version.txid) or node.get_raw_transaction(version.txid) or {}
        confirmations = int(info.get("confirmations", 0))
        if confirmations <= 0:
            continue
        reason = (
            f"version {version.txid} of this payment confirmed ({confirmations} "
            f"confirmations); {live.txid} is replaced"
        )
        payout_ids = list(
            session.execute(select(Payout.id).where(Payout.tx_id == live.id)).scalars()
        )
        # A reorg may have taken the live version's block away: back to `broadcast` first.
        transition_many(
            session, payout_ids, expected=S.CONFIRMED, target=S.BROADCAST, actor=actor,
            reason=f"reorg: {live.txid} is no longer in the chain", log_fields={"txid": live.txid},
        )  # fmt: skip
        transition_tx(
            session, live.id, expected=[TxState.SIGNED, TxState.BROADCAST, TxState.CONFIRMED],
            target=TxState.REPLACED, values={"last_error": reason},
        )  # fmt: skip
        transition_tx(
            session, version.id, expected=TxState.REPLACED, target=TxState.BROADCAST,
            values={"confirmations": confirmations, "block_hash": info.get("blockhash"),
                    "last_error": None},
        )  # fmt: skip
        moved = move_payouts(session, live, version, actor=actor, reason=reason)
        log.info("payment %s: adopted confirmed version %s (%d payouts)", live.family_txid,
                 version.txid, len(moved), extra={"txid": version.txid})  # fmt: skip
        session.flush()
        session.refresh(version)
        return version
    return live


def revert_refused_bump(session: Session, bump: Transaction, reason: str, *, actor: str) -> bool:
    """The node refused the bump `bump` for good (never accepted, so it paid nothing): the
    version it replaced is live again. False when `bump` is not a bump or already moved on."""
    if bump.replaces_txid is None:
        return False
    previous = session.execute(
        select(Transaction).where(Transaction.txid == bump.replaces_txid)
    ).scalar_one_or_none()
    if previous is None:
        return False
    if not transition_tx(
        session, bump.id, expected=TxState.SIGNED, target=TxState.REPLACED,
        values={"last_error": reason},
    ):  # fmt: skip
        return False
    transition_tx(session, previous.id, expected=TxState.REPLACED, target=TxState.BROADCAST)
    why = f"fee bump {bump.txid} refused by the node ({reason}); {previous.txid} is live again"
    move_payouts(session, bump, previous, actor=actor, reason=why)
    return True
