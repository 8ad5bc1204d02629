"""Unit-test helpers: a SQLite database with the model schema, and a payout factory.

Tests may set any column directly (including `state`) to build a scenario; production code
may not, which is exactly what the state machine tests check.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from shared.core.models import Base, IdempotencyKey, Payout, PayoutEvent, PayoutState, utcnow
from shared.infra.db import make_engine

# Valid regtest addresses (BIP173 test vectors re-encoded with the `bcrt` prefix, and a
# base58 P2PKH that regtest shares with testnet).
REGTEST_P2WPKH = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
REGTEST_P2WSH = "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry"
TESTNET_P2PKH = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"


def sqlite_engine(path: str) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    return engine


def make_payout(
    session: Session,
    *,
    state: PayoutState = PayoutState.AWAITING_APPROVAL,
    amount_sats: int = 10_000,
    created_by: str = "creator",
    **columns: Any,
) -> Payout:
    payout = Payout(
        id=uuid.uuid4(),
        amount_sats=amount_sats,
        state=state,
        created_by=created_by,
        metadata_={},
        **{"destination": REGTEST_P2WPKH, **columns},
    )
    session.add(payout)
    session.commit()
    return payout


def approved_ago(hours: float) -> Any:
    return utcnow() - timedelta(hours=hours)


def row_counts(session: Session) -> dict[str, int]:
    """How many payouts, events and idempotency keys exist: 'nothing changed' checks."""
    return {
        model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
        for model in (Payout, PayoutEvent, IdempotencyKey)
    }
