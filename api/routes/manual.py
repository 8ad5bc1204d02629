"""Manual signing routes (DESIGN §7): claim, submit and release live here.

Owned by the lead. Reuse `api.auth.require_scope` / `CanSign`, `api.errors.ApiError`,
`api.deps.SessionDep` and `api.schemas.serialize_payout`.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/payouts", tags=["manual signing"])
