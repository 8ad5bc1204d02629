"""Transaction routes (read-only; docs/architecture.md §10): the signed transactions the
engine stored, and which payouts each one pays. Scope `payouts:read`, like reading payouts.
Each route calls one function of `shared.sending.transaction_views` and serializes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import CanRead
from api.deps import SessionDep
from api.errors import error_responses
from api.schemas import TransactionOut, TransactionPage, transaction_out, transaction_summary_out
from shared.core.models import TxState
from shared.sending import transaction_views as views

router = APIRouter(prefix="/v1/transactions", tags=["transactions"])


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
    txid: Annotated[
        str,
        Path(
            description="Transaction id as the node prints it (64 hex digits)",
            pattern=views.TXID_PATTERN,
            min_length=64,
            max_length=64,
        ),
    ],
) -> TransactionOut:
    return transaction_out(views.get_transaction(session, txid))
