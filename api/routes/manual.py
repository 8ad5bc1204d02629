"""Manual signing routes (docs/architecture.md §7): claim → PSBT out, submit ← signed, release.

The rules (who may claim, what a submitted transaction must pay) live in `shared.sending.manual`,
which commits its own durable checkpoints through the request's unit of work; this module only
maps HTTP to it (refusals are `DomainError`s, answered by api.errors). Every route needs the
`payouts:sign` scope.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.auth import CanSign
from api.deps import UnitOfWorkDep, require_json_body
from api.errors import BODY_ERRORS, error_responses
from api.limits import body_limit, json_body_limit
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.sending import manual

router = APIRouter(prefix="/v1/payouts", tags=["manual signing"])
JsonBody = Annotated[None, Depends(require_json_body)]


class ManualClaimOut(BaseModel):
    payout_id: uuid.UUID
    psbt: str = Field(description="unsigned PSBT (base64) paying the payout; inputs are locked")
    fee_sats: int
    inputs: list[str] = Field(description="outpoints reserved for this payout (txid:vout)")
    claimed_by: str
    expires_at: datetime
    submit_url: str


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    psbt: str | None = Field(default=None, max_length=200_000, description="signed PSBT")
    tx_hex: str | None = Field(default=None, max_length=200_000, description="signed raw tx")


# Any body the schema allows fits, however small PAYOUTS_MAX_BODY_BYTES is.
SUBMIT_MAX_BODY_BYTES = json_body_limit(SubmitRequest)


class SubmitOut(BaseModel):
    payout_id: uuid.UUID
    txid: str
    state: str
    broadcast: str = Field(description="sent | already_known | unknown (resent later) | …")


class ReleaseOut(BaseModel):
    payout_id: uuid.UUID
    state: str
    note: str


def _node() -> NodeClient:
    return NodeClient.from_settings(get_settings())


@router.post(
    "/{payout_id}/manual/claim",
    response_model=ManualClaimOut,
    summary="Claim a manual-route payout and get an unsigned PSBT",
    description="Needs `payouts:sign`. Refused with 409 for any payout a worker has claimed "
    "(`claimed_by_worker`), that is on the automatic route (`automatic_processing`), or that "
    "is not an approved manual payout (`invalid_state`).",
    responses=error_responses(401, 403, 404, 409, 422, 502, 503),
)
def claim(payout_id: uuid.UUID, uow: UnitOfWorkDep, principal: CanSign) -> ManualClaimOut:
    held = manual.claim(uow, _node(), get_settings(), payout_id, principal.name)
    uow.commit()
    return ManualClaimOut(
        payout_id=held.payout_id,
        psbt=held.psbt,
        fee_sats=held.fee_sats,
        inputs=held.inputs,
        claimed_by=held.claimed_by,
        expires_at=held.expires_at,
        submit_url=f"{router.prefix}/{payout_id}/manual/submit",
    )


@router.post(
    "/{payout_id}/manual/submit",
    response_model=SubmitOut,
    summary="Submit the signed PSBT or raw transaction for a claimed payout",
    description="Needs `payouts:sign` and the manual claim. The transaction must pay the "
    "destination exactly the amount (422 `wrong_payment` otherwise) and spend the reserved "
    "inputs; it is stored before it is broadcast.",
    responses=error_responses(*BODY_ERRORS, 401, 403, 404, 409, 422, 503),
    openapi_extra=body_limit(SUBMIT_MAX_BODY_BYTES),
)
def submit(
    payout_id: uuid.UUID,
    body: SubmitRequest,
    uow: UnitOfWorkDep,
    principal: CanSign,
    _json: JsonBody,
) -> SubmitOut:
    done = manual.submit(
        uow, _node(), get_settings(), payout_id, principal.name, psbt=body.psbt, tx_hex=body.tx_hex
    )
    uow.commit()
    return SubmitOut(payout_id=done.payout_id, txid=done.txid, state=done.state,
                     broadcast=done.outcome)  # fmt: skip


@router.post(
    "/{payout_id}/manual/release",
    response_model=ReleaseOut,
    summary="Give a manual claim back",
    description="Needs `payouts:sign` and the claim. The PSBT's inputs stay reserved: the next "
    "claim gets a PSBT on the same inputs, so the released one can never also confirm.",
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
def release(payout_id: uuid.UUID, uow: UnitOfWorkDep, principal: CanSign) -> ReleaseOut:
    state = manual.release(uow, payout_id, principal.name)
    uow.commit()
    return ReleaseOut(
        payout_id=payout_id,
        state=state,
        note="claim released; the reserved inputs stay reserved for this payout",
    )
