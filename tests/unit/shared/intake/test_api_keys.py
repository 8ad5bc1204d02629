"""API keys: secret format, hash-only storage, verification, scopes, revocation, CLI."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cli import apikeys
from shared.core.models import ApiKey
from shared.infra.db import get_sessionmaker
from shared.intake.api_keys import (
    SCOPES,
    ApiKeyError,
    DuplicateKeyName,
    Principal,
    create_api_key,
    parse_scopes,
    revoke_api_key,
    verify_api_key,
)
from tests.unit.shared.factories import use_app_database

SECRET_RE = re.compile(r"^pp_[0-9a-f]{8}_[A-Za-z0-9_-]{32,}$")


@pytest.fixture
def app_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make a fresh SQLite file the configured database, as the CLI would see it."""
    return use_app_database(monkeypatch, tmp_path / "cli.db")


class TestCreate:
    def test_secret_has_the_documented_shape(self, session: Session) -> None:
        secret = create_api_key(session, "svc", "payouts:create")

        assert SECRET_RE.match(secret)

    def test_only_the_sha256_of_the_secret_is_stored(self, session: Session) -> None:
        secret = create_api_key(session, "svc", "payouts:create,payouts:read")
        session.commit()

        row = session.scalars(select(ApiKey)).one()
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert row.prefix == secret[3:11]
        stored = " ".join(str(v) for v in (row.name, row.prefix, row.secret_hash, row.scopes))
        assert secret not in stored and secret[12:] not in stored

    def test_two_keys_get_different_secrets(self, session: Session) -> None:
        assert create_api_key(session, "a", "admin") != create_api_key(session, "b", "admin")

    def test_duplicate_name_is_refused(self, session: Session) -> None:
        create_api_key(session, "svc", "admin")
        session.commit()

        with pytest.raises(DuplicateKeyName):
            create_api_key(session, "svc", "payouts:read")

    @pytest.mark.parametrize("name", ["", "   ", "x" * 129])
    def test_empty_or_overlong_name_is_refused(self, session: Session, name: str) -> None:
        with pytest.raises(ApiKeyError):
            create_api_key(session, name, "admin")


class TestScopes:
    def test_csv_is_trimmed_deduplicated_and_sorted(self) -> None:
        assert parse_scopes(" payouts:read, admin,payouts:read ,") == ["admin", "payouts:read"]

    @pytest.mark.parametrize("scopes", ["", " , ", "payouts:delete", "admin,root"])
    def test_unknown_or_no_scope_is_refused(self, scopes: str) -> None:
        with pytest.raises(ApiKeyError):
            parse_scopes(scopes)

    def test_admin_implies_every_scope(self) -> None:
        principal = Principal("ops", frozenset({"admin"}))

        assert all(principal.has_scope(s) for s in SCOPES)

    def test_a_scope_does_not_imply_another(self) -> None:
        principal = Principal("svc", frozenset({"payouts:create"}))

        assert principal.has_scope("payouts:create")
        assert not principal.has_scope("payouts:approve")


class TestVerify:
    def test_valid_secret_yields_name_and_scopes(self, session: Session) -> None:
        secret = create_api_key(session, "svc", "payouts:create,payouts:read")

        assert verify_api_key(session, secret) == Principal(
            "svc", frozenset({"payouts:create", "payouts:read"})
        )

    def test_tampered_secret_is_rejected(self, session: Session) -> None:
        secret = create_api_key(session, "svc", "admin")
        tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")

        assert verify_api_key(session, tampered) is None

    @pytest.mark.parametrize("presented", ["", "pp_", "pp_deadbeef_x", "Bearer", "sk_live_123"])
    def test_malformed_or_unknown_secret_is_rejected(
        self, session: Session, presented: str
    ) -> None:
        create_api_key(session, "svc", "admin")

        assert verify_api_key(session, presented) is None

    def test_revoked_key_is_rejected(self, session: Session) -> None:
        secret = create_api_key(session, "svc", "admin")

        assert revoke_api_key(session, "svc") is True
        assert verify_api_key(session, secret) is None

    def test_revoking_an_unknown_key_reports_it(self, session: Session) -> None:
        assert revoke_api_key(session, "ghost") is False


class TestCli:
    def test_create_prints_the_secret_once_on_stdout_and_warns(
        self, app_db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert apikeys.cli_create("svc", "payouts:create,payouts:read") == 0

        out, err = capsys.readouterr()
        [secret] = out.split()
        assert SECRET_RE.match(secret)
        assert "not shown again" in err and secret not in err
        with get_sessionmaker()() as session:
            assert verify_api_key(session, secret) is not None

    def test_duplicate_name_exits_2_with_a_message(
        self, app_db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        apikeys.cli_create("svc", "admin")
        capsys.readouterr()

        assert apikeys.cli_create("svc", "admin") == 2

        out, err = capsys.readouterr()
        assert out == "" and "already exists" in err

    def test_unknown_scope_exits_2_and_stores_nothing(
        self, app_db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert apikeys.cli_create("svc", "payouts:everything") == 2

        assert "unknown scope" in capsys.readouterr().err
        with get_sessionmaker()() as session:
            assert session.scalars(select(ApiKey)).all() == []

    def test_missing_schema_exits_1_with_a_hint(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("PAYOUTS_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")

        assert apikeys.cli_create("svc", "admin") == 1
        assert "payouts migrate" in capsys.readouterr().err

    def test_revoke_exits_0_then_key_no_longer_verifies(
        self, app_db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        apikeys.cli_create("svc", "admin")
        secret = capsys.readouterr().out.strip()

        assert apikeys.cli_revoke("svc") == 0
        with get_sessionmaker()() as session:
            assert verify_api_key(session, secret) is None

    def test_revoke_unknown_name_exits_2(
        self, app_db: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert apikeys.cli_revoke("ghost") == 2
        assert "no API key named" in capsys.readouterr().err
