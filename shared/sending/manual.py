"""The manual signing route (docs/architecture.md §7): PSBT out to a human's signer, signed tx back
in.

These functions take the caller's `UnitOfWork` and commit only through `uow.step()`, at the points
the safety argument needs (the claim together with its PSBT's reserved inputs; the signed bytes
before they are broadcast). Every refusal is a `DomainError` (code and kind; `api/errors.py` picks
the HTTP status).

It claims through the same CAS as the workers, and refuses — with a reason an operator can act on —
any payout a worker holds or will hold. That refusal, on the server, is what makes BTCPay's "Approve
& Send" double payment impossible here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from shared.core.claims import (
    Claim,
    SignedTx,
    claim_for_manual,
    current_claim,
    is_worker_holder,
    manual_actor,
    persist_signed_tx,
    release_claim,
    reserve_inputs,
)
from shared.core.errors import DomainError, ErrorKind, PayoutNotFound
from shared.core.models import Payout, PayoutState, Route, Transaction, utcnow
from shared.infra.settings import Settings
from shared.infra.unit_of_work import UnitOfWork
from shared.node import DecodedTx, FundedPsbt, NodeClient
from shared.node.amounts import btc_to_sats
from shared.node.coin_locks import unlock_quietly
from shared.node.errors import InsufficientFunds, NodeError, NodeUnavailable
from shared.sending.broadcasting import BroadcastOutcome, broadcast_persisted
from shared.sending.fees import choose_fee_rate_sat_vb
from shared.sending.payment_check import check_against_wallet
from shared.sending.signature_check import check_signatures_cover_everything

S = PayoutState


CONFLICT, INVALID = ErrorKind.CONFLICT, ErrorKind.INVALID


def _refusal(payout: Payout, key_name: str) -> DomainError | None:
    """Why this key may not claim this payout now, or None when it may."""
    pid = payout.id
    if is_worker_holder(payout.claimed_by) or (
        payout.route == Route.AUTOMATIC and payout.state in (S.SIGNED, S.BROADCAST, S.CONFIRMED)
    ):
        return DomainError(
            "claimed_by_worker",
            f"Payout {pid} was claimed by the automatic processor "
            f"({payout.claimed_by or 'a worker'}) and is now '{payout.state}'. "
            "It is being paid (or was paid) from the hot wallet; "
            f"there is nothing to sign. Do not pay it by hand: watch GET /v1/payouts/{pid}.",
            CONFLICT,
        )
    if payout.route == Route.AUTOMATIC and payout.state == S.APPROVED:
        return DomainError(
            "automatic_processing",
            f"Payout {pid} is on the automatic route: a worker will pay it from the hot wallet. "
            "Manual signing is refused so it cannot be paid twice. To pay it by hand instead, "
            "cancel it and create a new payout above the automatic limit.",
            CONFLICT,
        )
    if payout.state == S.APPROVED and payout.route == Route.MANUAL:
        return None
    if payout.state == S.CLAIMED and payout.route == Route.MANUAL:
        if payout.lease_until is not None and payout.lease_until < utcnow():
            return None  # expired manual claim: may be taken over (same reserved inputs)
        if payout.claimed_by == manual_actor(key_name):
            return DomainError(
                "invalid_state",
                f"You already hold the claim on payout {pid} until {payout.lease_until}. Submit "
                f"the signed PSBT to /v1/payouts/{pid}/manual/submit or release it.",
                CONFLICT,
            )
        return DomainError(
            "invalid_state",
            f"Payout {pid} is claimed for manual signing by {payout.claimed_by} until "
            f"{payout.lease_until}. Ask them, or wait for the claim to expire.",
            CONFLICT,
        )
    hint = "approve it first" if payout.state == S.AWAITING_APPROVAL else "nothing to sign"
    return DomainError(
        "invalid_state",
        f"Payout {pid} is '{payout.state}'; only approved manual-route payouts can be claimed "
        f"({hint}).",
        CONFLICT,
    )


def _get(session: Session, payout_id: uuid.UUID) -> Payout:
    # populate_existing: the row changes under us (workers, our own UPDATE-based CAS).
    payout = session.get(Payout, payout_id, populate_existing=True)
    if payout is None:
        raise PayoutNotFound(payout_id)
    return payout


@dataclass(frozen=True)
class ManualClaim:
    payout_id: uuid.UUID
    psbt: str
    fee_sats: int
    inputs: list[str]
    claimed_by: str
    expires_at: datetime


def _changed_while_claiming(payout_id: uuid.UUID) -> DomainError:
    return DomainError(
        "invalid_state", f"payout {payout_id} changed while claiming; retry", CONFLICT
    )


def claim(
    uow: UnitOfWork, node: NodeClient, settings: Settings, payout_id: uuid.UUID, key_name: str
) -> ManualClaim:
    """CAS the claim, build the PSBT and record its inputs as reserved, in one DB transaction.

    Until that transaction commits, nobody (not even this key's own `submit`) sees a claim, so
    no submit can ever find a claim without reserved inputs to hold it to. If anything fails
    before the commit, the claim is rolled back and the inputs the PSBT locked are unlocked.
    """
    newly_locked: list[str] = []
    try:
        with uow.step() as session:
            refusal = _refusal(_get(session, payout_id), key_name)
            if refusal:
                raise refusal
            won = claim_for_manual(session, payout_id, key_name, settings.manual_claim_seconds)
            if won is None:  # lost a race; explain with the state that beat us
                uow.rollback()  # a fresh snapshot, to read the winner's row
                raise _refusal(_get(session, payout_id), key_name) or _changed_while_claiming(
                    payout_id
                )
            funded, inputs = _build_psbt(node, settings, won)
            if not won.reserved_inputs:
                newly_locked = inputs
                if not reserve_inputs(session, won, inputs):
                    raise _changed_while_claiming(payout_id)
    except BaseException:
        # The claim did not commit, so its PSBT is never handed out: free what it locked.
        unlock_quietly(node, newly_locked)
        raise
    return ManualClaim(
        payout_id, funded.psbt, funded.fee_sats, inputs, manual_actor(key_name), won.lease_until
    )


def _build_psbt(node: NodeClient, settings: Settings, won: Claim) -> tuple[FundedPsbt, list[str]]:
    """An unsigned PSBT paying the claim; a takeover reuses the reserved inputs and only them,
    so the new PSBT conflicts with every earlier one and at most one can ever confirm."""
    try:
        _check_still_unspent(node, won.reserved_inputs or [])
        funded = node.wallet_create_funded_psbt(
            {won.destination: won.amount_sats},
            fee_rate_sat_vb=choose_fee_rate_sat_vb(node, settings),
            lock_unspents=True,
            inputs=won.reserved_inputs,
            add_inputs=not won.reserved_inputs,
        )
    except NodeError as exc:
        raise _build_error(exc, won.reserved_inputs) from exc
    try:
        return funded, _psbt_inputs(node, funded.psbt)
    except NodeError as exc:
        if not won.reserved_inputs:  # the PSBT locked coins we will never hand out
            unlock_quietly(node, _locked_by(node, funded.psbt))
        raise _build_error(exc, won.reserved_inputs) from exc


def _check_still_unspent(node: NodeClient, reserved: list[str]) -> None:
    """Refuse a takeover whose reserved coins were spent (in a block or the mempool): the
    wallet may still build a PSBT on them, but it could never confirm, and the spend is likely
    the earlier PSBT itself, signed and broadcast elsewhere."""
    spent = [outpoint for outpoint in reserved if node.get_tx_out(outpoint) is None]
    if spent:
        raise DomainError(
            "reserved_inputs_unavailable",
            f"an earlier PSBT for this payout reserved inputs {reserved}, and {spent} are already "
            "spent. That PSBT may have been signed and broadcast elsewhere: check the chain "
            "before doing anything else.",
            CONFLICT,
        )


def _locked_by(node: NodeClient, psbt: str) -> list[str]:
    try:
        return _psbt_inputs(node, psbt)
    except NodeError:
        return []  # the node is gone; the orphaned-lock job frees them later


def _psbt_inputs(node: NodeClient, psbt: str) -> list[str]:
    decoded = node.decode_psbt(psbt)
    return [f"{vin['txid']}:{vin['vout']}" for vin in decoded["tx"]["vin"]]


def _build_error(exc: NodeError, reserved: list[str] | None) -> DomainError:
    if isinstance(exc, InsufficientFunds):
        return DomainError(
            "insufficient_funds",
            f"the hot wallet cannot fund this payout: {exc.message}",
            CONFLICT,
        )
    if isinstance(exc, NodeUnavailable):
        return _node_unavailable()
    if reserved:
        return DomainError(
            "reserved_inputs_unavailable",
            f"an earlier PSBT for this payout reserved inputs {reserved}, and they can no longer "
            f"be spent ({exc.message}). That PSBT may have been signed and broadcast elsewhere: "
            "check the chain before doing anything else.",
            CONFLICT,
        )
    return DomainError(
        "node_error", f"the node refused to build the PSBT: {exc.message}", ErrorKind.NODE_REFUSED
    )


def _node_unavailable() -> DomainError:
    return DomainError(
        "node_unavailable",
        "the Bitcoin node is unreachable; nothing was changed, retry",
        ErrorKind.UNAVAILABLE,
    )


@dataclass(frozen=True)
class Submitted:
    payout_id: uuid.UUID
    txid: str
    state: str
    outcome: str


def submit(
    uow: UnitOfWork,
    node: NodeClient,
    settings: Settings,
    payout_id: uuid.UUID,
    key_name: str,
    *,
    psbt: str | None = None,
    tx_hex: str | None = None,
) -> Submitted:
    """Check a signer's transaction, persist it (fenced by the claim token), then broadcast.

    Accepted only from the claim holder, and only a transaction that spends inputs reserved
    for this payout and nothing else, and pays the payout exactly plus at most one change
    output (`shared.sending.payment_check`). A node outage at any step is `node_unavailable`
    (kind UNAVAILABLE), never the signer's fault.
    """
    actor = manual_actor(key_name)
    session = uow.session
    with uow.step():
        payout = _get(session, payout_id)
        if payout.state != S.CLAIMED or payout.claimed_by != actor:
            raise _not_holder(payout, key_name)
        held = current_claim(payout)
    try:
        raw_hex = _final_hex(node, psbt, tx_hex)
        signed, vout = _checked_tx(session, node, settings, raw_hex, held)
    except NodeUnavailable as exc:
        raise _node_unavailable() from exc
    # Checkpoint: the signed bytes are durable before anything is broadcast (§5.1).
    with uow.step():
        if not persist_signed_tx(session, held, signed, actor=actor, vout=vout):
            raise DomainError(
                "invalid_state",
                f"your claim on payout {payout_id} is no longer valid",
                CONFLICT,
            )
    try:
        with uow.step():
            row = session.get(Transaction, _get(session, payout_id).tx_id)
            if row is None:  # persist_signed_tx just wrote it in a committed transaction
                raise RuntimeError(f"payout {payout_id} is signed but its transaction is gone")
            outcome = broadcast_persisted(
                session, node, row, actor=actor, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
            ).value
            session.flush()
            state = _get(session, payout_id).state
    except NodeUnavailable:
        # The bytes are stored: the rebroadcast job sends exactly these once the node is back.
        outcome, state = BroadcastOutcome.UNKNOWN.value, S.SIGNED
    return Submitted(payout_id, signed.txid, state, outcome)


def _not_holder(payout: Payout, key_name: str) -> DomainError:
    """Why this key may not submit for this payout."""
    if payout.state != S.CLAIMED:
        return _refusal(payout, key_name) or DomainError(
            "invalid_state",
            f"payout {payout.id} is '{payout.state}', not claimed by you",
            CONFLICT,
        )
    code = "claimed_by_worker" if is_worker_holder(payout.claimed_by) else "invalid_state"
    return DomainError(
        code,
        f"payout {payout.id} is claimed by {payout.claimed_by}, not by you",
        CONFLICT,
    )


def _final_hex(node: NodeClient, psbt: str | None, tx_hex: str | None) -> str:
    if (psbt is None) == (tx_hex is None):
        raise DomainError("invalid_request", "send exactly one of 'psbt' or 'tx_hex'", INVALID)
    if tx_hex is not None:
        return tx_hex
    try:
        final_hex, complete = node.finalize_psbt(psbt or "")
    except NodeUnavailable:
        raise
    except NodeError as exc:
        raise DomainError("invalid_psbt", f"not a valid PSBT: {exc.message}", INVALID) from exc
    if not complete or final_hex is None:
        raise DomainError(
            "psbt_incomplete",
            "the PSBT is not fully signed; sign every input and resubmit",
            INVALID,
        )
    return final_hex


def _checked_tx(
    session: Session, node: NodeClient, settings: Settings, raw_hex: str, held: Claim
) -> tuple[SignedTx, int]:
    """The signer's transaction, checked, and which of its outputs pays the payout."""
    try:
        decoded = node.decode_raw_transaction(raw_hex)
    except NodeUnavailable:
        raise
    except NodeError as exc:
        raise DomainError("invalid_transaction", exc.message, INVALID) from exc
    # Both raise PaymentMismatch, a DomainError of kind INVALID with the rule's own code.
    check_signatures_cover_everything(raw_hex)
    vouts = check_against_wallet(
        session, node, decoded.outputs, {held.destination: held.amount_sats}
    )
    _check_spends_reserved(decoded.inputs, held.reserved_inputs or [])
    return _accepted_by_node(node, settings, raw_hex, decoded), vouts[held.destination]


def _check_spends_reserved(inputs: list[str], reserved: list[str]) -> None:
    """Only the reserved inputs, and at least one: then every PSBT ever handed out for this
    payout conflicts with this transaction, and at most one of them can confirm. A claim
    without reserved inputs gets nothing accepted (it cannot happen since the claim and its
    reservation commit together; refusing keeps it that way)."""
    if not reserved:
        raise DomainError(
            "must_spend_reserved_inputs",
            "no inputs are reserved for this claim, so no transaction can be accepted for it; "
            "release the claim and claim the payout again",
            INVALID,
        )
    if not set(reserved) & set(inputs):
        raise DomainError(
            "must_spend_reserved_inputs",
            f"the transaction must spend at least one of the inputs reserved for this payout "
            f"({', '.join(reserved)}), so the earlier PSBT can never also confirm",
            INVALID,
        )
    foreign = [i for i in inputs if i not in reserved]
    if foreign:
        raise DomainError(
            "unreserved_inputs",
            f"the transaction spends inputs not reserved for this payout ({', '.join(foreign)}); "
            f"spend only the PSBT's inputs ({', '.join(reserved)})",
            INVALID,
        )


def _accepted_by_node(
    node: NodeClient, settings: Settings, raw_hex: str, decoded: DecodedTx
) -> SignedTx:
    try:
        check = node.test_mempool_accept(raw_hex)
    except NodeUnavailable:
        raise
    except NodeError as exc:
        raise DomainError(
            "rejected_by_node",
            f"the node would not accept this transaction: {exc.message}",
            INVALID,
        ) from exc
    fee_sats = _fee_from_acceptance(check)
    if fee_sats is None and _already_known(check):
        # The signer broadcast it already: testmempoolaccept gives no fees then, the mempool
        # (or, once mined, the wallet) still knows what it pays.
        fee_sats = _fee_of_known(node, decoded.txid)
    vsize = int(check.get("vsize") or decoded.vsize)
    if not check.get("allowed") and not _already_known(check):
        raise DomainError(
            "rejected_by_node",
            f"the node would not accept this transaction: {check.get('reject-reason')}",
            INVALID,
        )
    if fee_sats is not None and vsize and fee_sats > settings.max_fee_rate_sat_vb * vsize:
        raise DomainError(
            "fee_too_high",
            f"fee {fee_sats} sats for {vsize} vB exceeds PAYOUTS_MAX_FEE_RATE_SAT_VB="
            f"{settings.max_fee_rate_sat_vb}",
            INVALID,
        )
    return SignedTx(decoded.txid, raw_hex, fee_sats or 0, decoded.inputs, decoded.vsize)


def _fee_from_acceptance(check: dict[str, object]) -> int | None:
    fees = check.get("fees")
    if isinstance(fees, dict) and "base" in fees:
        return btc_to_sats(fees["base"])
    return None


def _fee_of_known(node: NodeClient, txid: str) -> int | None:
    entry = node.get_mempool_entry(txid)
    if entry is not None:
        return _fee_from_acceptance(entry)
    fee = (node.get_transaction(txid) or {}).get("fee")  # negative: the wallet paid it
    return None if fee is None else abs(btc_to_sats(fee))


def _already_known(check: dict[str, object]) -> bool:
    reason = str(check.get("reject-reason", ""))
    return "already" in reason or "txn-already-known" in reason


def release(uow: UnitOfWork, payout_id: uuid.UUID, key_name: str) -> str:
    """Give a manual claim back. The PSBT's inputs stay reserved and locked: whoever claims
    next gets a PSBT on the same inputs, so the released one can never also confirm."""
    actor = manual_actor(key_name)
    with uow.step() as session:
        payout = _get(session, payout_id)
        if payout.state != S.CLAIMED or payout.claimed_by != actor:
            raise DomainError(
                "invalid_state",
                f"payout {payout_id} is not claimed by you ({payout.state})",
                CONFLICT,
            )
        if not release_claim(
            session,
            current_claim(payout),
            actor=actor,
            reason="released by signer",
            count_attempt=False,
        ):
            raise DomainError("invalid_state", "the claim changed while releasing", CONFLICT)
        return S.APPROVED.value
