"""The migration drift check on PostgreSQL, the production database: the Alembic migrations
build exactly the schema the models describe (tests/unit/shared/infra/test_migrations.py does
the same on SQLite, which the unit tier and the demo use)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from shared.core.models import Base
from shared.infra.migrate import alembic_config, downgrade, upgrade
from tests.support.databases import scratch_database
from tests.support.services import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.integration


def drift(url: str) -> tuple[list[Any], str | None]:
    """(differences between the database and the models, the database's revision)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata), context.get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()


def test_the_migrated_session_database_matches_the_models(postgres_url: str) -> None:
    differences, revision = drift(postgres_url)
    assert differences == []
    assert revision == head()


def test_downgrade_removes_everything_and_upgrade_rebuilds_the_same_schema(
    postgres_url: str,  # only to skip/fail like every PostgreSQL test when it is missing
) -> None:
    with scratch_database(POSTGRES_ADMIN_URL, "payouts_migrations") as url:
        downgrade(url)
        engine = create_engine(url)
        try:
            assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        finally:
            engine.dispose()
        upgrade(url, "0001")  # one revision at a time, as a long-lived database sees them
        upgrade(url)
        differences, revision = drift(url)
        assert differences == []
        assert revision == head()
