"""SQLAlchemy 2.0 models (docs/architecture.md §3). The schema itself is created by the Alembic
migration."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL returns aware values; SQLite (unit tests, the demo) returns naive ones, which
    cannot be compared with `utcnow()`. Stored values are always UTC, so tag them on load.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        # `column - timedelta` must bind the timedelta as an interval, not as this type.
        return self.impl_instance.coerce_compared_value(op, value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class PayoutState(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    CLAIMED = "claimed"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Route(enum.StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class TxState(enum.StrEnum):
    SIGNED = "signed"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    CONFLICTED = "conflicted"
    # Another version of the same payment (a fee bump, or the original a bump replaced) is the
    # live one, or confirmed. Still watched: a replaced version may yet confirm instead.
    REPLACED = "replaced"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Payout(Base):
    __tablename__ = "payouts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    destination: Mapped[str] = mapped_column(String(128))
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    # Plain strings, not DB enums: the state machine module is the only writer and a string
    # column keeps migrations simple when a state is added.
    state: Mapped[str] = mapped_column(String(32), default=PayoutState.AWAITING_APPROVAL)
    route: Mapped[str | None] = mapped_column(String(16), default=None)
    created_by: Mapped[str] = mapped_column(String(128))
    approved_by: Mapped[str | None] = mapped_column(String(128), default=None)
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(160), default=None)
    claim_token: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # Outpoints ("txid:vout") promised to this payout by an unsubmitted manual PSBT. A later
    # PSBT must spend the same ones, so at most one of them can ever confirm
    # (docs/architecture.md §7).
    reserved_inputs: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    tx_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("transactions.id"), default=None
    )
    # Which output of `tx_id` pays this payout, and its share of that transaction's fee
    # (a batch pays many payouts; the shares add up to the transaction's fee).
    vout: Mapped[int | None] = mapped_column(Integer, default=None)
    fee_share_sats: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_payouts_state_created", "state", "created_at"),
        Index("ix_payouts_tx_id", "tx_id"),
        # The daily automatic budget sums amounts by route over the last 24 h of approvals,
        # under a lock that serializes approvals: keep that sum an index range scan.
        Index("ix_payouts_route_approved_at", "route", "approved_at"),
    )


class Transaction(Base):
    """Write-ahead log of signed transactions: persisted before the first broadcast."""

    __tablename__ = "transactions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    txid: Mapped[str] = mapped_column(String(64), unique=True)
    raw_hex: Mapped[str] = mapped_column(Text)
    fee_sats: Mapped[int] = mapped_column(BigInteger)
    # Virtual size as the node decoded it (None for rows written before batching).
    vsize: Mapped[int | None] = mapped_column(Integer, default=None)
    inputs: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=TxState.SIGNED)
    confirmations: Mapped[int] = mapped_column(Integer, default=0)
    block_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    broadcast_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # Fee bumps (docs/architecture.md §6): a bumped version names the version it replaces and
    # the first version of the payment; every version of one payment shares `original_txid`
    # (None on the first version itself, which is its own original).
    replaces_txid: Mapped[str | None] = mapped_column(String(64), default=None)
    original_txid: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_transactions_state", "state"),
        Index("ix_transactions_created", "created_at", "id"),
        Index("ix_transactions_replaces", "replaces_txid"),
        Index("ix_transactions_original", "original_txid"),
    )

    @property
    def family_txid(self) -> str:
        """The txid every version of this payment shares: the first version's."""
        return self.original_txid or self.txid


class TransactionPayout(Base):
    """Which payouts a stored transaction pays, by which output, with what fee share.

    `payouts.tx_id` names the one version that counts now; this table keeps every version's
    outputs, so a replaced or dead transaction still shows whom it paid, and adopting another
    version (the one that confirmed) knows each payout's output in it without asking the node.
    """

    __tablename__ = "transaction_payouts"

    tx_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("transactions.id"), primary_key=True)
    payout_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("payouts.id"), primary_key=True)
    vout: Mapped[int | None] = mapped_column(Integer, default=None)
    fee_share_sats: Mapped[int | None] = mapped_column(BigInteger, default=None)

    __table_args__ = (Index("ix_transaction_payouts_payout", "payout_id"),)


class PayoutEvent(Base):
    """Append-only audit trail; one row per state transition, written in the same DB tx."""

    __tablename__ = "payout_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    payout_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("payouts.id"))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(160))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (Index("ix_payout_events_payout", "payout_id", "id"),)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    client: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    payout_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("payouts.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("client", "key", name="uq_idempotency_client_key"),)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # Lookup prefix (not secret) + SHA-256 of the whole secret; the secret itself is never stored.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class Event(Base):
    """The outbox (docs/architecture.md §3, README "Events"): one row per externally visible
    change, inserted by shared/events/outbox.py in the same DB transaction as the change.

    `id` is insert order only; readers page by `sequence`, which the sequencer
    (shared/events/feed.py) assigns after the writer committed and once no older writing
    transaction is still running, so a reader that polls with the last sequence it saw never
    misses a row that commits late.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sequence: Mapped[int | None] = mapped_column(BigInteger, unique=True, default=None)
    type: Mapped[str] = mapped_column(String(64))
    payout_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None, index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The writer's top-level transaction id on PostgreSQL: a server default of
    # `pg_current_xact_id()` (xid8), stored as bigint. An xid8 is the 32-bit xid extended by a
    # 32-bit epoch, so it fits a signed bigint for the next 2^63 transactions; bigint keeps the
    # column one portable type, and the sequencer compares it with the snapshot's xmin cast
    # the same way. NULL on SQLite, where writes are serialized and id order is commit order.
    writer_xact_id: Mapped[int | None] = mapped_column(
        BigInteger, server_default=FetchedValue()
    )

    __table_args__ = (
        # The sequencer's scan: the few rows not numbered yet, in id order.
        Index(
            "ix_events_unsequenced",
            "id",
            postgresql_where=text("sequence IS NULL"),
            sqlite_where=text("sequence IS NULL"),
        ),
    )
