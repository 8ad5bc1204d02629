"""Transaction routes (docs/architecture.md §10): the signed transactions the engine stored,
which payouts each one pays (scope `payouts:read`, like reading payouts), and an operator's fee
bump (scope `payouts:approve`). Each route calls one function of `shared.sending` and
serializes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from api.auth import CanApprove, CanRead
from api.deps import SessionDep, require_json_body
from api.errors import BODY_ERRORS, error_responses
from api.schemas import (
    BumpOut,
    BumpRequest,
    TransactionOut,
    TransactionPage,
    transaction_out,
    transaction_summary_out,
)
from shared.core.errors import DomainError, ErrorKind
from shared.core.models import TxState
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.node.errors import NodeUnavailable
from shared.sending import fee_bumping
from shared.sending import transaction_views as views

router = APIRouter(prefix="/v1/transactions", tags=["transactions"])

TxidPath = Annotated[
    str,
    Path(
        description="Transaction id as the node prints it (64 hex digits)",
        pattern=views.TXID_PATTERN,
        min_length=64,
        max_length=64,
    ),
]


@router.get(
    "",
    response_model=TransactionPage,
    summary="List transactions",
    description="Needs `payouts:read`. Oldest first; filter by `state`; follow `next_cursor` "
    "(paged like `GET /v1/payouts`). Each item says how many payouts it pays.",
    responses=error_responses(401, 403, 422, 503),
)
def list_transactions(
    session: SessionDep,
    _: CanRead,
    state: Annotated[TxState | None, Query(description="only transactions in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE_SIZE)] = views.DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> TransactionPage:
    page = views.list_transactions(session, state=state, limit=limit, cursor=cursor)
    return TransactionPage(
        items=[transaction_summary_out(view) for view in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{txid}",
    response_model=TransactionOut,
    summary="Get a transaction and the payouts it pays",
    description="Needs `payouts:read`. `txid`: 64 hex digits (422 otherwise); 404 when no "
    "stored transaction has it. `payouts` are ordered by `vout`.",
    responses=error_responses(401, 403, 404, 422, 503),
)
def get_transaction(
    session: SessionDep,
    _: CanRead,
    txid: TxidPath,
) -> TransactionOut:
    return transaction_out(views.get_transaction(session, txid))


@router.post(
    "/{txid}/bump",
    response_model=BumpOut,
    status_code=202,
    summary="Bump a stuck transaction's fee (RBF, or CPFP through its youngest descendant)",
    description="Needs `payouts:approve`. The new version spends every input of the old one, "
    "pays every payout the same output, and is stored before it is broadcast. 409: "
    "`already_confirmed`, `inputs_spent`, `already_replaced` (bump the newest version), "
    "`not_broadcast`, "
    "`manual_payout`, `change_being_spent`, `has_descendants`, `nothing_to_bump_with` (the "
    "wallet cannot pay the higher fee). 422: `rate_too_low` (not above what it pays now), "
    "`over_cap` (over PAYOUTS_MAX_FEE_RATE_SAT_VB or PAYOUTS_MAX_BUMP_FEE_SATS).",
    responses=error_responses(*BODY_ERRORS, 401, 403, 404, 409, 422, 502, 503),
)
def bump(
    body: BumpRequest,
    session: SessionDep,
    principal: CanApprove,
    txid: TxidPath,
    _json: Annotated[None, Depends(require_json_body)],
) -> BumpOut:
    settings = get_settings()
    node = NodeClient.from_settings(settings)
    try:
        done = fee_bumping.bump_transaction(
            node, settings, views.normalize_txid(txid), fee_rate_sat_vb=body.fee_rate_sat_vb,
            actor=principal.name,
        )  # fmt: skip
    except NodeUnavailable as exc:
        # Every node call before the persist; the broadcast after it never raises this.
        raise DomainError("node_unavailable", "the Bitcoin node is unreachable; nothing was "
                          "stored or sent, retry", ErrorKind.UNAVAILABLE) from exc  # fmt: skip
    return BumpOut(
        txid=done.txid, method=done.method, replaced_txid=done.bumped_txid,
        new_txid=done.new_txid, old_fee_sats=done.old_fee_sats, new_fee_sats=done.new_fee_sats,
        old_fee_rate_sat_vb=done.old_fee_rate_sat_vb, new_fee_rate_sat_vb=done.new_fee_rate_sat_vb,
        package_fee_rate_sat_vb=done.package_fee_rate_sat_vb, broadcast=done.broadcast,
        transaction=transaction_out(views.get_transaction(session, done.new_txid)),
    )  # fmt: skip
