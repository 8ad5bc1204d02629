"""The manual signing route (DESIGN §7): PSBT out to a human's signer, signed tx back in.

These functions commit on the session they are given, at the points the safety argument needs
(the claim before the node builds a PSBT; the signed bytes before they are broadcast).

It claims through the same CAS as the workers, and refuses — with a reason an operator can act
on — any payout a worker holds or will hold. That refusal, on the server, is what makes
BTCPay's "Approve & Send" double payment impossible here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from shared.broadcasting import broadcast_persisted
from shared.claims import (
    SignedTx,
    claim_for_manual,
    current_claim,
    is_worker_holder,
    manual_actor,
    persist_signed_tx,
    release_claim,
    reserve_inputs,
)
from shared.db import committing
from shared.fees import choose_fee_rate_sat_vb
from shared.models import Payout, PayoutState, Route, Transaction, utcnow
from shared.node import NodeClient
from shared.node.amounts import btc_to_sats
from shared.node.errors import InsufficientFunds, NodeError, NodeUnavailable
from shared.settings import Settings

S = PayoutState


class ManualRouteError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _refusal(payout: Payout, key_name: str) -> ManualRouteError | None:
    """Why this key may not claim this payout now, or None when it may."""
    pid = payout.id
    if is_worker_holder(payout.claimed_by) or (
        payout.route == Route.AUTOMATIC and payout.state in (S.SIGNED, S.BROADCAST, S.CONFIRMED)
    ):
        return ManualRouteError(
            409,
            "claimed_by_worker",
            f"Payout {pid} was claimed by the automatic processor "
            f"({payout.claimed_by or 'a worker'}) and is now '{payout.state}'. "
            "It is being paid (or was paid) from the hot wallet; "
            f"there is nothing to sign. Do not pay it by hand: watch GET /v1/payouts/{pid}.",
        )
    if payout.route == Route.AUTOMATIC and payout.state == S.APPROVED:
        return ManualRouteError(
            409,
            "automatic_processing",
            f"Payout {pid} is on the automatic route: a worker will pay it from the hot wallet. "
            "Manual signing is refused so it cannot be paid twice. To pay it by hand instead, "
            "cancel it and create a new payout above the automatic limit.",
        )
    if payout.state == S.APPROVED and payout.route == Route.MANUAL:
        return None
    if payout.state == S.CLAIMED and payout.route == Route.MANUAL:
        if payout.lease_until is not None and payout.lease_until < utcnow():
            return None  # expired manual claim: may be taken over (same reserved inputs)
        if payout.claimed_by == manual_actor(key_name):
            return ManualRouteError(
                409,
                "invalid_state",
                f"You already hold the claim on payout {pid} until {payout.lease_until}. Submit "
                f"the signed PSBT to /v1/payouts/{pid}/manual/submit or release it.",
            )
        return ManualRouteError(
            409,
            "invalid_state",
            f"Payout {pid} is claimed for manual signing by {payout.claimed_by} until "
            f"{payout.lease_until}. Ask them, or wait for the claim to expire.",
        )
    hint = "approve it first" if payout.state == S.AWAITING_APPROVAL else "nothing to sign"
    return ManualRouteError(
        409,
        "invalid_state",
        f"Payout {pid} is '{payout.state}'; only approved manual-route payouts can be claimed "
        f"({hint}).",
    )


def _get(session: Session, payout_id: uuid.UUID) -> Payout:
    # populate_existing: the row changes under us (workers, our own UPDATE-based CAS).
    payout = session.get(Payout, payout_id, populate_existing=True)
    if payout is None:
        raise ManualRouteError(404, "not_found", f"no payout {payout_id}")
    return payout


@dataclass(frozen=True)
class ManualClaim:
    payout_id: uuid.UUID
    psbt: str
    fee_sats: int
    inputs: list[str]
    claimed_by: str
    expires_at: datetime


def claim(
    session: Session, node: NodeClient, settings: Settings, payout_id: uuid.UUID, key_name: str
) -> ManualClaim:
    with committing(session):
        refusal = _refusal(_get(session, payout_id), key_name)
        if refusal:
            raise refusal
        won = claim_for_manual(session, payout_id, key_name, settings.manual_claim_seconds)
        if won is None:  # lost a race; explain with the state that beat us
            session.rollback()
            raise _refusal(_get(session, payout_id), key_name) or ManualRouteError(
                409, "invalid_state", f"payout {payout_id} changed while claiming; retry"
            )
    actor = manual_actor(key_name)
    try:
        funded = node.wallet_create_funded_psbt(
            {won.destination: won.amount_sats},
            fee_rate_sat_vb=choose_fee_rate_sat_vb(node, settings),
            lock_unspents=True,
            inputs=won.reserved_inputs,
            add_inputs=not won.reserved_inputs,
        )
        inputs = _psbt_inputs(node, funded.psbt)
    except NodeError as exc:
        with committing(session):
            release_claim(session, won, actor=actor, reason=str(exc), count_attempt=False)
        raise _build_error(exc, won.reserved_inputs) from exc
    with committing(session):
        if not won.reserved_inputs:
            reserve_inputs(session, won, inputs)
    return ManualClaim(payout_id, funded.psbt, funded.fee_sats, inputs, actor, won.lease_until)


def _psbt_inputs(node: NodeClient, psbt: str) -> list[str]:
    decoded = node.decode_psbt(psbt)
    return [f"{vin['txid']}:{vin['vout']}" for vin in decoded["tx"]["vin"]]


def _build_error(exc: NodeError, reserved: list[str] | None) -> ManualRouteError:
    if isinstance(exc, InsufficientFunds):
        return ManualRouteError(
            409, "insufficient_funds", f"the hot wallet cannot fund this payout: {exc.message}"
        )
    if isinstance(exc, NodeUnavailable):
        return ManualRouteError(503, "node_unavailable", "the Bitcoin node is unreachable; retry")
    if reserved:
        return ManualRouteError(
            409,
            "reserved_inputs_unavailable",
            f"an earlier PSBT for this payout reserved inputs {reserved}, and they can no longer "
            f"be spent ({exc.message}). That PSBT may have been signed and broadcast elsewhere: "
            "check the chain before doing anything else.",
        )
    return ManualRouteError(502, "node_error", f"the node refused to build the PSBT: {exc.message}")


@dataclass(frozen=True)
class Submitted:
    payout_id: uuid.UUID
    txid: str
    state: str
    outcome: str


def submit(
    session: Session,
    node: NodeClient,
    settings: Settings,
    payout_id: uuid.UUID,
    key_name: str,
    *,
    psbt: str | None = None,
    tx_hex: str | None = None,
) -> Submitted:
    actor = manual_actor(key_name)
    with committing(session):
        payout = _get(session, payout_id)
        if payout.state != S.CLAIMED or payout.claimed_by != actor:
            raise _not_holder(payout, key_name)
        held = current_claim(payout)
    raw_hex = _final_hex(node, psbt, tx_hex)
    signed = _checked_tx(
        node, settings, raw_hex, held.destination, held.amount_sats, held.reserved_inputs or []
    )
    with committing(session):
        if not persist_signed_tx(session, held, signed, actor=actor):
            raise ManualRouteError(
                409, "invalid_state", f"your claim on payout {payout_id} is no longer valid"
            )
    with committing(session):
        row = session.get(Transaction, _get(session, payout_id).tx_id)
        assert row is not None
        outcome = broadcast_persisted(
            session, node, row, actor=actor, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
        )
        session.flush()
        state = _get(session, payout_id).state
    return Submitted(payout_id, signed.txid, state, outcome.value)


def _not_holder(payout: Payout, key_name: str) -> ManualRouteError:
    """Why this key may not submit for this payout."""
    if payout.state != S.CLAIMED:
        return _refusal(payout, key_name) or ManualRouteError(
            409, "invalid_state", f"payout {payout.id} is '{payout.state}', not claimed by you"
        )
    code = "claimed_by_worker" if is_worker_holder(payout.claimed_by) else "invalid_state"
    return ManualRouteError(
        409, code, f"payout {payout.id} is claimed by {payout.claimed_by}, not by you"
    )


def _final_hex(node: NodeClient, psbt: str | None, tx_hex: str | None) -> str:
    if (psbt is None) == (tx_hex is None):
        raise ManualRouteError(422, "invalid_request", "send exactly one of 'psbt' or 'tx_hex'")
    if tx_hex is not None:
        return tx_hex
    try:
        final_hex, complete = node.finalize_psbt(psbt or "")
    except NodeError as exc:
        raise ManualRouteError(422, "invalid_psbt", f"not a valid PSBT: {exc.message}") from exc
    if not complete or final_hex is None:
        raise ManualRouteError(
            422, "psbt_incomplete", "the PSBT is not fully signed; sign every input and resubmit"
        )
    return final_hex


def _checked_tx(
    node: NodeClient,
    settings: Settings,
    raw_hex: str,
    destination: str,
    amount_sats: int,
    reserved: list[str],
) -> SignedTx:
    try:
        decoded = node.decode_raw_transaction(raw_hex)
    except NodeError as exc:
        raise ManualRouteError(422, "invalid_transaction", exc.message) from exc
    paying = [o for o in decoded.outputs if o.address == destination]
    if len(paying) != 1 or paying[0].value_sats != amount_sats:
        raise ManualRouteError(
            422,
            "wrong_payment",
            f"the transaction must pay exactly {amount_sats} sats to {destination} in one output",
        )
    if reserved and not set(reserved) & set(decoded.inputs):
        # Otherwise the handed-out PSBT and this transaction could both confirm.
        raise ManualRouteError(
            422,
            "must_spend_reserved_inputs",
            f"the transaction must spend at least one of the inputs reserved for this payout "
            f"({', '.join(reserved)}), so the earlier PSBT can never also confirm",
        )
    check = node.test_mempool_accept(raw_hex)
    fee_sats = _fee_from_acceptance(check)
    vsize = int(check.get("vsize") or decoded.vsize)
    if not check.get("allowed") and not _already_known(check):
        raise ManualRouteError(
            422,
            "rejected_by_node",
            f"the node would not accept this transaction: {check.get('reject-reason')}",
        )
    if fee_sats is not None and vsize and fee_sats > settings.max_fee_rate_sat_vb * vsize:
        raise ManualRouteError(
            422,
            "fee_too_high",
            f"fee {fee_sats} sats for {vsize} vB exceeds PAYOUTS_MAX_FEE_RATE_SAT_VB="
            f"{settings.max_fee_rate_sat_vb}",
        )
    return SignedTx(decoded.txid, raw_hex, fee_sats or 0, decoded.inputs)


def _fee_from_acceptance(check: dict[str, object]) -> int | None:
    fees = check.get("fees")
    if isinstance(fees, dict) and "base" in fees:
        return btc_to_sats(fees["base"])
    return None


def _already_known(check: dict[str, object]) -> bool:
    reason = str(check.get("reject-reason", ""))
    return "already" in reason or "txn-already-known" in reason


def release(session: Session, payout_id: uuid.UUID, key_name: str) -> str:
    """Give a manual claim back. The PSBT's inputs stay reserved and locked: whoever claims
    next gets a PSBT on the same inputs, so the released one can never also confirm."""
    actor = manual_actor(key_name)
    with committing(session):
        payout = _get(session, payout_id)
        if payout.state != S.CLAIMED or payout.claimed_by != actor:
            raise ManualRouteError(
                409, "invalid_state", f"payout {payout_id} is not claimed by you ({payout.state})"
            )
        if not release_claim(
            session,
            current_claim(payout),
            actor=actor,
            reason="released by signer",
            count_attempt=False,
        ):
            raise ManualRouteError(409, "invalid_state", "the claim changed while releasing")
        return S.APPROVED.value
