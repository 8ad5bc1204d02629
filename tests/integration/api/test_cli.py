"""`payouts apikey create/revoke` as an operator runs them, against PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.integration.api.conftest import bearer

pytestmark = pytest.mark.integration


def payouts(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    env["PAYOUTS_DATABASE_URL"] = db_url
    exe = Path(sys.executable).with_name("payouts")
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_created_key_is_printed_once_stored_hashed_and_works(
    client: httpx.Client, pg_db: str
) -> None:
    made = payouts(
        "apikey", "create", "--name", "ops-cli", "--scopes", "payouts:read", db_url=pg_db
    )

    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("pp_") and "not shown again" in made.stderr
    engine = create_engine(pg_db)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT prefix, secret_hash, scopes FROM api_keys")).one()
    engine.dispose()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(tuple(row))
    assert client.get("/v1/payouts", headers=bearer(secret)).status_code == 200

    duplicate = payouts("apikey", "create", "--name", "ops-cli", "--scopes", "admin", db_url=pg_db)
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr
    assert duplicate.stdout == ""

    revoked = payouts("apikey", "revoke", "--name", "ops-cli", db_url=pg_db)
    assert revoked.returncode == 0
    assert client.get("/v1/payouts", headers=bearer(secret)).status_code == 401


def test_unknown_scope_is_refused_with_exit_2(pg_db: str) -> None:
    made = payouts("apikey", "create", "--name", "x", "--scopes", "payouts:all", db_url=pg_db)

    assert made.returncode == 2 and "unknown scope" in made.stderr
