"""Read-only views of the transactions table for `GET /v1/transactions` (docs/architecture.md
§3, §10): one page of transactions, one transaction with the payouts it pays.

Nothing here writes. Paging is the payouts list's: oldest first by (created_at, id), the same
opaque cursor (`shared.intake.payouts.decode_cursor` validates it, with the same message), one
extra row to know whether another page exists (index ix_transactions_created).

`vsize` comes from the row; rows written before migration 0003 have none, and then it is
computed from the stored bytes (`vsize_from_raw_hex`, a pure parser of the serialization).
"""

from __future__ import annotations

import base64
import logging
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, case, func, or_, select
from sqlalchemy.orm import Session

from shared.core.errors import DomainError, ErrorKind
from shared.core.models import Payout, Transaction, TransactionPayout, TxState
from shared.core.validation import ValidationError
from shared.intake.payouts import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_cursor
from shared.sending import versions

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "TXID_PATTERN",
    "PaidPayout",
    "TransactionNotFound",
    "TransactionPage",
    "TransactionView",
    "get_transaction",
    "list_transactions",
    "vsize_from_raw_hex",
]

log = logging.getLogger(__name__)

# A txid as the node prints it: 64 hex digits (lowercase from bitcoind; either case accepted).
TXID_PATTERN = r"^[0-9a-fA-F]{64}$"
_TXID = re.compile(r"[0-9a-fA-F]{64}")


class TransactionNotFound(DomainError):
    def __init__(self, txid: str) -> None:
        super().__init__("not_found", f"no transaction with txid {txid}", ErrorKind.NOT_FOUND)
        self.txid = txid


@dataclass(frozen=True)
class PaidPayout:
    id: uuid.UUID
    vout: int | None
    amount_sats: int
    fee_share_sats: int | None


@dataclass(frozen=True)
class TransactionView:
    id: uuid.UUID
    txid: str
    state: str
    fee_sats: int
    vsize: int | None
    confirmations: int
    created_at: datetime
    payout_count: int
    payouts: tuple[PaidPayout, ...] = ()  # filled by get_transaction only
    # Fee bumps, filled by get_transaction only: the version this one replaced, the one that
    # replaced it, and every version of the payment (txids, oldest first).
    replaces: str | None = None
    replaced_by: str | None = None
    versions: tuple[str, ...] = ()

    @property
    def fee_rate_sat_vb(self) -> float | None:
        """fee / vsize in sat/vB, to 2 decimals; None when the size is unknown."""
        if not self.vsize:
            return None
        return round(self.fee_sats / self.vsize, 2)


@dataclass(frozen=True)
class TransactionPage:
    items: list[TransactionView]
    next_cursor: str | None


# ---------------------------------------------------------------------------------------------
# Size of a serialized transaction


def vsize_from_raw_hex(raw_hex: str) -> int:
    """Virtual size of a serialized transaction: weight = 3 * stripped size + total size
    (BIP141), vsize = ceil(weight / 4). Raises ValueError for bytes that are not exactly one
    transaction."""
    raw = bytes.fromhex(raw_hex)
    total = len(raw)
    return math.ceil((3 * (total - _witness_bytes(raw)) + total) / 4)


def _witness_bytes(raw: bytes) -> int:
    """How many bytes of `raw` the stripped serialization leaves out: the segwit marker and
    flag and every witness stack (0 for a legacy serialization)."""
    reader = _Reader(raw)
    reader.take(4)  # version
    segwit = reader.peek(2) == b"\x00\x01"
    if segwit:
        reader.take(2)
    inputs = reader.varint()
    for _ in range(inputs):
        reader.take(36)  # outpoint
        reader.take(reader.varint())  # scriptSig
        reader.take(4)  # sequence
    for _ in range(reader.varint()):
        reader.take(8)  # amount
        reader.take(reader.varint())  # scriptPubKey
    witness_start = reader.pos
    if segwit:
        for _ in range(inputs):
            for _ in range(reader.varint()):
                reader.take(reader.varint())
    witness = reader.pos - witness_start
    reader.take(4)  # locktime
    if reader.pos != len(raw):
        raise ValueError("trailing bytes after the transaction")
    return witness + 2 if segwit else 0


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : self.pos + n]

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated transaction")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        width = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        return int.from_bytes(self.take(width), "little")


# ---------------------------------------------------------------------------------------------
# Reading


def normalize_txid(txid: str) -> str:
    """The txid in the node's lowercase; ValidationError unless exactly 64 hex digits."""
    if _TXID.fullmatch(txid) is None:
        raise ValidationError("txid", "must be 64 hexadecimal characters")
    return txid.lower()


def _payout_counts(session: Session, tx_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not tx_ids:
        return {}
    rows = session.execute(
        select(TransactionPayout.tx_id, func.count())
        .where(TransactionPayout.tx_id.in_(tx_ids))
        .group_by(TransactionPayout.tx_id)
    )
    return {tx_id: int(count) for tx_id, count in rows if tx_id is not None}


# Columns of a view; raw_hex only for rows that have no stored vsize (the bytes can be
# hundreds of kB: never load them for a row that does not need them).
_COLUMNS = (
    Transaction.id,
    Transaction.txid,
    Transaction.state,
    Transaction.fee_sats,
    Transaction.vsize,
    Transaction.confirmations,
    Transaction.created_at,
    Transaction.replaces_txid,
    case((Transaction.vsize.is_(None), Transaction.raw_hex), else_=None).label("raw_hex"),
)


def _vsize(txid: str, stored: int | None, raw_hex: str | None) -> int | None:
    if stored is not None:
        return stored
    if raw_hex is None:
        return None
    try:
        return vsize_from_raw_hex(raw_hex)
    except ValueError as exc:
        log.warning("transaction %s: stored bytes do not parse (%s); vsize unknown", txid, exc)
        return None


def _view(
    row: Row[Any], payout_count: int, payouts: tuple[PaidPayout, ...] = ()
) -> TransactionView:
    return TransactionView(
        id=row.id,
        txid=row.txid,
        state=row.state,
        fee_sats=row.fee_sats,
        vsize=_vsize(row.txid, row.vsize, row.raw_hex),
        confirmations=row.confirmations,
        created_at=_as_utc(row.created_at),
        payout_count=payout_count,
        payouts=payouts,
    )


def list_transactions(
    session: Session,
    state: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> TransactionPage:
    """Transactions oldest first, by (created_at, id), with how many payouts each pays."""
    if state is not None and state not in {s.value for s in TxState}:
        raise ValidationError(
            "state", f"unknown state {state!r}; one of {', '.join(s.value for s in TxState)}"
        )
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    stmt = select(*_COLUMNS)
    if state is not None:
        stmt = stmt.where(Transaction.state == state)
    if cursor is not None:
        after_at, after_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                Transaction.created_at > after_at,
                and_(Transaction.created_at == after_at, Transaction.id > after_id),
            )
        )
    rows = list(
        session.execute(stmt.order_by(Transaction.created_at, Transaction.id).limit(limit + 1))
    )
    page = rows[:limit]
    counts = _payout_counts(session, [row.id for row in page])
    items = [_view(row, counts.get(row.id, 0)) for row in page]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return TransactionPage(items=items, next_cursor=next_cursor)


def get_transaction(session: Session, txid: str) -> TransactionView:
    """One transaction with the payouts it pays, by vout (payouts without one last)."""
    normalized = normalize_txid(txid)
    row = session.execute(select(*_COLUMNS).where(Transaction.txid == normalized)).one_or_none()
    if row is None:
        raise TransactionNotFound(normalized)
    # Through transaction_payouts, not payouts.tx_id: a replaced or dead version still shows
    # whom it paid, by its own outputs.
    link = TransactionPayout
    paid = tuple(
        PaidPayout(p.id, p.vout, p.amount_sats, p.fee_share_sats)
        for p in session.execute(
            select(Payout.id, link.vout, Payout.amount_sats, link.fee_share_sats)
            .join(link, link.payout_id == Payout.id)
            .where(link.tx_id == row.id)
            .order_by(link.vout.is_(None), link.vout, Payout.id)
        )
    )
    view = _view(row, len(paid), paid)
    return replace(
        view,
        replaces=row.replaces_txid,
        replaced_by=versions.replaced_by(session, row.txid),
        versions=tuple(versions.version_txids(session, [row.id]).get(row.id, [row.txid])),
    )


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """The payouts list's cursor format (`shared.intake.payouts.encode_cursor`), for a
    transaction's (created_at, id)."""
    raw = f"{_as_utc(created_at).isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
