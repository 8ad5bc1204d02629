"""Payout intake and approval routes (docs/architecture.md §10). Each route authenticates,
calls one function of `shared.intake.payouts` with the request's unit of work, commits it, and
serializes; domain errors map to HTTP in api.errors.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from api.auth import CanApprove, CanCreate, CanRead
from api.deps import SessionDep, UnitOfWorkDep, require_json_body
from api.errors import BODY_ERRORS, IDEMPOTENCY_KEY_HEADER, ApiError, error_responses
from api.schemas import (
    ApprovedPayoutOut,
    CancelRequest,
    CreatePayoutRequest,
    EventList,
    PayoutOut,
    PayoutPage,
    event_out,
    serialize_payout,
    serialize_payouts,
)
from shared.core.models import PayoutState, Route
from shared.core.validation import IDEMPOTENCY_KEY_PATTERN, MAX_IDEMPOTENCY_KEY_LENGTH
from shared.intake import payouts as intake

router = APIRouter(prefix="/v1/payouts", tags=["payouts"])

# Declared as a parameter after the principal, not in `dependencies=[...]` (which run first),
# so the scope check comes before the content-type check. (AuthenticationMiddleware answers
# 401/403 before FastAPI reads the body at all; see api.auth.)
JsonBody = Annotated[None, Depends(require_json_body)]


@router.post(
    "",
    status_code=201,
    response_model=PayoutOut,
    summary="Create a payout (idempotent)",
    description="Needs scope `payouts:create`. The `Idempotency-Key` header is required: a "
    "retry with the same key and body returns the same payout with 200; the same key with a "
    "different body is refused with 422 `idempotency_key_reused`.",
    responses={
        200: {
            "description": "Replay of an earlier request with the same key and body",
            "model": PayoutOut,
        },
        **error_responses(*BODY_ERRORS, 401, 403, 422, 503),
    },
)
def create_payout(
    body: CreatePayoutRequest,
    response: Response,
    uow: UnitOfWorkDep,
    principal: CanCreate,
    _json: JsonBody,
    idempotency_key: Annotated[
        str,
        Header(
            alias=IDEMPOTENCY_KEY_HEADER,
            description="Client-chosen, unique per payout: 1-255 printable ASCII characters",
            # Documented here, checked by shared.core.validation (one rule, its own messages).
            json_schema_extra={
                "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                "pattern": IDEMPOTENCY_KEY_PATTERN,
            },
        ),
    ],
) -> PayoutOut:
    if not idempotency_key:  # present but empty (missing is answered in api.errors)
        raise ApiError(400, "idempotency_key_required", "the Idempotency-Key header is required")
    payout, created = intake.create_payout_idempotent(
        uow.session,
        principal.name,
        idempotency_key,
        body.destination,
        body.amount_sats,
        body.metadata,
    )
    uow.commit()
    response.headers["Location"] = f"{router.prefix}/{payout.id}"
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return serialize_payout(uow.session, payout)


@router.get(
    "",
    response_model=PayoutPage,
    summary="List payouts",
    description="Needs `payouts:read`. Oldest first; filter by `state`; follow `next_cursor`.",
    responses=error_responses(401, 403, 422, 503),
)
def list_payouts(
    session: SessionDep,
    _: CanRead,
    state: Annotated[PayoutState | None, Query(description="only payouts in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=intake.MAX_PAGE_SIZE)] = intake.DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> PayoutPage:
    page = intake.list_payouts(session, state=state, limit=limit, cursor=cursor)
    return PayoutPage(items=serialize_payouts(session, page.items), next_cursor=page.next_cursor)


@router.get(
    "/{payout_id}",
    response_model=PayoutOut,
    summary="Get a payout",
    description="Needs `payouts:read`.",
    responses=error_responses(401, 403, 404, 422, 503),
)
def get_payout(payout_id: uuid.UUID, session: SessionDep, _: CanRead) -> PayoutOut:
    return serialize_payout(session, intake.get_payout(session, payout_id))


@router.get(
    "/{payout_id}/events",
    response_model=EventList,
    summary="Audit trail of a payout",
    description="Needs `payouts:read`. One entry per state transition, oldest first.",
    responses=error_responses(401, 403, 404, 422, 503),
)
def list_events(payout_id: uuid.UUID, session: SessionDep, _: CanRead) -> EventList:
    events = intake.list_events(session, payout_id)
    return EventList(payout_id=payout_id, items=[event_out(e) for e in events])


@router.post(
    "/{payout_id}/approve",
    response_model=ApprovedPayoutOut,
    response_model_exclude_unset=True,
    summary="Approve a payout",
    description="Needs `payouts:approve`. Moves `awaiting_approval` → `approved` and decides "
    "the route. `processing: automatic` means a worker pays it (there is nothing to sign); "
    "`processing: manual` comes with `claim_url` for a signer. 409 in any other state; 403 "
    "`four_eyes` when four-eyes approval is on and the approver created the payout.",
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
def approve_payout(
    payout_id: uuid.UUID, uow: UnitOfWorkDep, principal: CanApprove
) -> ApprovedPayoutOut:
    # For the automatic route, approve registered publishing process_payout to run after
    # this commit (docs/architecture.md §6).
    payout, route = intake.approve(uow, payout_id, principal.name)
    uow.commit()
    data = serialize_payout(uow.session, payout).model_dump()
    if route is Route.AUTOMATIC:
        return ApprovedPayoutOut(**data, processing="automatic")
    return ApprovedPayoutOut(
        **data, processing="manual", claim_url=f"{router.prefix}/{payout.id}/manual/claim"
    )


@router.post(
    "/{payout_id}/cancel",
    response_model=PayoutOut,
    summary="Cancel a payout",
    description="Needs `payouts:approve` (whoever may approve may also refuse). Only before "
    "any claim: from `awaiting_approval` or `approved`; 409 `invalid_state` otherwise. An "
    'optional body `{"reason": ...}` is recorded in the audit trail.',
    responses=error_responses(*BODY_ERRORS, 401, 403, 404, 409, 422, 503),
)
def cancel_payout(
    payout_id: uuid.UUID,
    uow: UnitOfWorkDep,
    principal: CanApprove,
    _json: JsonBody,
    body: CancelRequest | None = None,
) -> PayoutOut:
    reason = body.reason if body else None
    payout = intake.cancel(uow.session, payout_id, principal.name, reason=reason)
    uow.commit()
    return serialize_payout(uow.session, payout)
