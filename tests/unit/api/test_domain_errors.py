"""One error model: every domain refusal is a `DomainError` whose kind `api/errors.py` maps to
an HTTP status in one place, with the `code` clients rely on unchanged."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import KIND_STATUS, install_error_handlers
from shared.core.errors import DomainError, ErrorKind, InvalidState, PayoutNotFound
from shared.core.validation import ValidationError
from shared.intake.api_keys import ApiKeyError, DuplicateKeyName
from shared.intake.payouts import FourEyesViolation, IdempotencyConflict, PsbtHandedOut
from shared.node.errors import InsufficientFunds, NodeError, NodeUnavailable
from shared.sending import manual
from shared.sending.payment_check import PaymentMismatch

SHARED = Path(__file__).resolve().parents[3] / "shared"
PAYOUT_ID = uuid.UUID("6f1c1c2e-0000-4000-8000-000000000001")


def test_every_kind_has_exactly_one_status() -> None:
    assert set(KIND_STATUS) == set(ErrorKind)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ErrorKind.NOT_FOUND, 404),
        (ErrorKind.CONFLICT, 409),
        (ErrorKind.INVALID, 422),
        (ErrorKind.FORBIDDEN, 403),
        (ErrorKind.NODE_REFUSED, 502),
        (ErrorKind.UNAVAILABLE, 503),
    ],
)
def test_kind_to_status(kind: ErrorKind, status: int) -> None:
    assert KIND_STATUS[kind] == status


def _refusals() -> list[tuple[DomainError, int, str]]:
    payout_id = PAYOUT_ID

    class _Payout:  # what PsbtHandedOut reads from a payout row
        id = payout_id
        state = "approved"
        reserved_inputs = ["ab" * 32 + ":0"]

    return [
        (PayoutNotFound(payout_id), 404, "not_found"),
        (IdempotencyConflict("reused"), 422, "idempotency_key_reused"),
        (FourEyesViolation("same key"), 403, "four_eyes"),
        (InvalidState.for_action("approve", "approved", ["awaiting_approval"]), 409,
         "invalid_state"),
        (PsbtHandedOut(_Payout()), 409, "invalid_state"),  # type: ignore[arg-type]
        (ValidationError("amount_sats", "must be positive"), 422, "invalid_request"),
        (PaymentMismatch("wrong_payment", "pays less"), 422, "wrong_payment"),
        (PaymentMismatch("sighash_not_all", "0x02"), 422, "sighash_not_all"),
        (manual._node_unavailable(), 503, "node_unavailable"),
        (manual._build_error(NodeUnavailable("down"), None), 503, "node_unavailable"),
        (manual._build_error(InsufficientFunds("poor"), None), 409, "insufficient_funds"),
        (manual._build_error(NodeError("no"), ["ab" * 32 + ":0"]), 409,
         "reserved_inputs_unavailable"),
        (manual._build_error(NodeError("no"), None), 502, "node_error"),
        (ApiKeyError("bad scope"), 422, "invalid_request"),
        (DuplicateKeyName("taken"), 409, "key_name_taken"),
    ]  # fmt: skip


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    refusals = _refusals()

    @app.get("/refuse/{index}")
    def refuse(index: int) -> None:
        raise refusals[index][0]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("index", range(len(_refusals())))
def test_each_refusal_answers_its_status_and_code_through_the_one_handler(
    client: TestClient, index: int
) -> None:
    error, status, code = _refusals()[index]

    response = client.get(f"/refuse/{index}")

    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": error.message}}


def test_the_validation_message_names_the_field_first() -> None:
    error = ValidationError("amount_sats", "must be positive, got 0")
    assert (error.code, error.kind) == ("invalid_request", ErrorKind.INVALID)
    assert error.message == "amount_sats must be positive, got 0"
    assert (error.field, error.reason) == ("amount_sats", "must be positive, got 0")


def test_nothing_in_shared_knows_http() -> None:
    """No web framework imports and no `status` on errors under shared/."""
    offenders = []
    for path in SHARED.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                if any(n.split(".")[0] in {"fastapi", "starlette", "api"} for n in names):
                    offenders.append(f"{path}:{node.lineno} imports {names}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"status", "status_code"}
                and isinstance(node.ctx, ast.Store)
            ):
                offenders.append(f"{path}:{node.lineno} sets .{node.attr}")
    assert offenders == []
