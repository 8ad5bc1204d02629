"""Request and response bodies. Requests forbid unknown fields and use strict types, so
`"amount_sats": "100"`, `1.5` or `true` are refused rather than coerced."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from sqlalchemy.orm import Session

from shared.core.models import Payout, PayoutEvent, PayoutState, Route, TxState
from shared.core.validation import MAX_REASON_LENGTH
from shared.intake.payouts import transaction_ids
from shared.sending.transaction_views import TransactionView
from shared.sending.versions import version_txids


class CreatePayoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination: StrictStr = Field(
        description="Bitcoin address on the configured network (base58 or bech32/bech32m)",
        examples=["bcrt1q456m5qjwvdz495dx9gfdl6p043f6regkmm9620"],
    )
    amount_sats: StrictInt = Field(
        description="Whole satoshis, from the dust limit (546) to PAYOUTS_MAX_PAYOUT_SATS",
        examples=[150_000],
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Any JSON object; stored and returned verbatim"
    )


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StrictStr | None = Field(
        default=None, max_length=MAX_REASON_LENGTH, description="Recorded in the audit trail"
    )


class PayoutOut(BaseModel):
    id: uuid.UUID
    destination: str
    amount_sats: int
    state: PayoutState
    route: Route | None
    created_by: str
    approved_by: str | None
    approved_at: datetime | None
    claimed_by: str | None
    lease_until: datetime | None
    attempts: int
    txid: str | None = Field(
        description="Id of the signed transaction paying it, once signed. After a fee bump: "
        "the newest version, or once one is in a block, the version that confirmed"
    )
    transaction_versions: list[str] = Field(
        default_factory=list,
        description="Every version of its transaction (txids, oldest first): more than one "
        "after a fee bump; only one of them can ever confirm",
    )
    vout: int | None = Field(
        description="Which output of that transaction pays it (null until signed, and for "
        "transactions stored before batching)"
    )
    fee_share_sats: int | None = Field(
        description="Its share of that transaction's fee; the shares of a transaction's "
        "payouts add up to its fee"
    )
    last_error: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ApprovedPayoutOut(PayoutOut):
    processing: Literal["automatic", "manual"] = Field(
        description="automatic: a worker pays it, nothing to sign. manual: claim it at claim_url"
    )
    claim_url: str | None = Field(
        default=None, description="Only for manual processing: where a signer claims it"
    )


class PayoutPage(BaseModel):
    items: list[PayoutOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= to get the next page; null on the last page"
    )


class EventOut(BaseModel):
    id: int
    from_state: PayoutState | None
    to_state: PayoutState
    actor: str
    reason: str | None
    at: datetime


class EventList(BaseModel):
    payout_id: uuid.UUID
    items: list[EventOut]


class TransactionPayoutOut(BaseModel):
    id: uuid.UUID
    vout: int | None = Field(description="The output paying it (null for pre-batching rows)")
    amount_sats: int
    fee_share_sats: int | None


class _TransactionFields(BaseModel):
    txid: str = Field(examples=["9f" * 32])
    state: TxState
    fee_sats: int
    vsize: int | None = Field(
        description="Virtual size in vbytes (computed from the stored bytes for transactions "
        "stored before batching; null only if those do not parse)"
    )
    fee_rate_sat_vb: float | None = Field(
        description="fee_sats / vsize, rounded to 2 decimals; null when vsize is"
    )
    confirmations: int


class TransactionSummaryOut(_TransactionFields):
    payout_count: int = Field(description="How many payouts it pays")
    created_at: datetime


class TransactionOut(_TransactionFields):
    payouts: list[TransactionPayoutOut] = Field(
        description="The payouts it pays, by vout (kept for replaced and dead versions too)"
    )
    replaces: str | None = Field(description="The version this fee bump replaced (txid)")
    replaced_by: str | None = Field(description="The version that replaced this one (txid)")
    versions: list[str] = Field(
        description="Every version of this payment (txids, oldest first); one can confirm"
    )


class BumpRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fee_rate_sat_vb: int = Field(
        ge=1, le=100_000,
        description="The fee rate the transaction should pay, with any unconfirmed ancestors, "
        "in whole sat/vB; capped by PAYOUTS_MAX_FEE_RATE_SAT_VB (422 over_cap above it)",
    )  # fmt: skip

    @field_validator("fee_rate_sat_vb", mode="before")
    @classmethod
    def _a_json_integer(cls, value: Any) -> Any:
        # JSON Schema's "integer" includes 25.0; a string or a fraction is refused.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a JSON number")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("must be a whole number of sat/vB")
        return int(value)


class BumpOut(BaseModel):
    txid: str = Field(description="The transaction asked about")
    method: Literal["rbf", "cpfp"] = Field(
        description="rbf: it was replaced; cpfp: it has descendants, so its youngest descendant "
        "was replaced with a fee that pays for the whole package"
    )
    replaced_txid: str = Field(description="The version that was replaced")
    new_txid: str = Field(description="The new version, stored before it was broadcast")
    old_fee_sats: int
    new_fee_sats: int
    old_fee_rate_sat_vb: float
    new_fee_rate_sat_vb: float
    package_fee_rate_sat_vb: float = Field(
        description="The new version's fee rate with its unconfirmed ancestors, as the node "
        "sees it after the broadcast (0 when it is not in the mempool yet)"
    )
    broadcast: str = Field(description="sent | already_known | unknown (resent later) | …")
    transaction: TransactionOut = Field(description="The new version")


class TransactionPage(BaseModel):
    items: list[TransactionSummaryOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= to get the next page; null on the last page"
    )


class Health(BaseModel):
    status: Literal["ok"]


@overload
def _utc(moment: datetime) -> datetime: ...
@overload
def _utc(moment: None) -> None: ...
def _utc(moment: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes (stored as UTC); clients always get an explicit offset.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def payout_out(
    payout: Payout, txid: str | None, transaction_versions: list[str] | None = None
) -> PayoutOut:
    """The public JSON view of a payout (claim_token and reserved inputs stay private)."""
    return PayoutOut(
        id=payout.id,
        destination=payout.destination,
        amount_sats=payout.amount_sats,
        state=PayoutState(payout.state),
        route=Route(payout.route) if payout.route else None,
        created_by=payout.created_by,
        approved_by=payout.approved_by,
        approved_at=_utc(payout.approved_at),
        claimed_by=payout.claimed_by,
        lease_until=_utc(payout.lease_until),
        attempts=payout.attempts,
        txid=txid,
        transaction_versions=transaction_versions or ([txid] if txid else []),
        vout=payout.vout,
        fee_share_sats=payout.fee_share_sats,
        last_error=payout.last_error,
        metadata=payout.metadata_ or {},
        created_at=_utc(payout.created_at),
        updated_at=_utc(payout.updated_at),
    )


def serialize_payout(session: Session, payout: Payout) -> PayoutOut:
    """`payout_out` with the txid looked up; use this in routes."""
    return serialize_payouts(session, [payout])[0]


def serialize_payouts(session: Session, payouts: list[Payout]) -> list[PayoutOut]:
    txids = transaction_ids(session, payouts)  # one query for the whole page
    chains = version_txids(session, [p.tx_id for p in payouts if p.tx_id is not None])
    return [
        payout_out(p, txids.get(p.id), chains.get(p.tx_id) if p.tx_id else None)
        for p in payouts
    ]


def _transaction_fields(view: TransactionView) -> dict[str, Any]:
    return {
        "txid": view.txid,
        "state": TxState(view.state),
        "fee_sats": view.fee_sats,
        "vsize": view.vsize,
        "fee_rate_sat_vb": view.fee_rate_sat_vb,
        "confirmations": view.confirmations,
    }


def transaction_summary_out(view: TransactionView) -> TransactionSummaryOut:
    return TransactionSummaryOut(
        **_transaction_fields(view), payout_count=view.payout_count, created_at=view.created_at
    )


def transaction_out(view: TransactionView) -> TransactionOut:
    return TransactionOut(
        **_transaction_fields(view),
        payouts=[
            TransactionPayoutOut(
                id=p.id, vout=p.vout, amount_sats=p.amount_sats, fee_share_sats=p.fee_share_sats
            )
            for p in view.payouts
        ],
        replaces=view.replaces,
        replaced_by=view.replaced_by,
        versions=list(view.versions) or [view.txid],
    )


def event_out(event: PayoutEvent) -> EventOut:
    return EventOut(
        id=event.id,
        from_state=PayoutState(event.from_state) if event.from_state else None,
        to_state=PayoutState(event.to_state),
        actor=event.actor,
        reason=event.reason,
        at=_utc(event.at),
    )
