"""Resend the stored bytes of every `signed` transaction; never re-sign
(docs/architecture.md §5.1)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from shared.core.models import Payout, PayoutState, Transaction, TxState
from shared.infra.db import session_scope
from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.recovery.common import ACTOR, BATCH
from shared.sending.broadcasting import (
    broadcast_persisted,
)

log = logging.getLogger(__name__)
S = PayoutState


def rebroadcast_signed(node: NodeClient, settings: Settings) -> dict[str, int]:
    """Resend the persisted bytes of every `signed` transaction (never re-sign)."""
    counts: dict[str, int] = {}
    with session_scope() as session:
        tx_ids = list(
            session.execute(
                select(Transaction.id)
                .join(Payout, Payout.tx_id == Transaction.id)
                # A fee bump's new version is `signed` while its payouts are already
                # `broadcast` (under the version it replaces).
                .where(Transaction.state == TxState.SIGNED,
                       Payout.state.in_([S.SIGNED, S.BROADCAST]))
                .distinct()
                .limit(BATCH)
            ).scalars()
        )
    for tx_id in tx_ids:
        with session_scope() as session:
            tx = session.get(Transaction, tx_id)
            if tx is None or tx.state != TxState.SIGNED:
                continue
            outcome = broadcast_persisted(
                session, node, tx, actor=ACTOR, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
            )
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    return counts
