"""The real app on a SQLite file through FastAPI's TestClient; Celery publishing replaced by
a recording fake."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.infra.db import session_scope
from shared.intake.api_keys import create_api_key
from shared.sending import dispatch

with warnings.catch_warnings():
    # Starlette nudges towards httpx2, which is not a project dependency; the bundled httpx
    # client still works and the warning says nothing about our code.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from api.app import create_app
from tests.unit.shared.factories import use_app_database

SETTINGS_ENV = {
    "PAYOUTS_NETWORK": "regtest",
    "PAYOUTS_AUTOMATIC_PROCESSING": "true",
    "PAYOUTS_MAX_PAYOUT_SATS": "50000000",
    "PAYOUTS_AUTO_MAX_SATS": "1000000",
    "PAYOUTS_AUTO_DAILY_SATS": "3000000",
    "PAYOUTS_FOUR_EYES": "false",
    "PAYOUTS_MAX_BODY_BYTES": "4096",
}

KEY_SCOPES = {
    "admin": "admin",
    "creator": "payouts:create,payouts:read",
    "creator2": "payouts:create,payouts:read",
    "approver": "payouts:approve,payouts:read",
    "reader": "payouts:read",
    "signer": "payouts:sign",
}


class RecordingPublisher:
    """Stands in for `shared.sending.dispatch.enqueue_process_payout`."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.fail_with: Exception | None = None

    def __call__(self, payout_id: uuid.UUID | str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.published.append(str(payout_id))


@pytest.fixture
def app_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return use_app_database(monkeypatch, tmp_path / "api.db", **SETTINGS_ENV)


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch) -> RecordingPublisher:
    fake = RecordingPublisher()
    monkeypatch.setattr(dispatch, "enqueue_process_payout", fake)
    return fake


@pytest.fixture
def keys(app_db: str) -> dict[str, str]:
    """name -> secret, for keys with the scopes in KEY_SCOPES."""
    with session_scope() as session:
        return {name: create_api_key(session, name, scopes) for name, scopes in KEY_SCOPES.items()}


@pytest.fixture
def client(app_db: str, publisher: RecordingPublisher) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def bearer(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}
