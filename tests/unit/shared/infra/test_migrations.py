"""The Alembic migrations create exactly the schema the models describe, and undo cleanly."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from shared.core.models import Base
from shared.infra.migrate import alembic_config, downgrade, upgrade
from tests.unit.shared.factories import sqlite_engine


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_upgrade_matches_the_models_and_downgrade_removes_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    downgrade(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_unit_fixtures_get_their_schema_from_the_migrations() -> None:
    """tests/unit/shared/factories.py copies a migrated template (`sqlite_engine`,
    `migrate_app_database`); a fixture calling `create_all` would test another schema."""
    unit = Path(__file__).resolve().parents[3]
    offenders = [
        f"{path.relative_to(unit)}:{number}"
        for path in sorted(unit.rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "metadata.create_all(" in line
    ]
    assert offenders == []


def test_the_unit_template_is_migrated_to_head(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "copy.db")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_revision() == head_revision()
    finally:
        engine.dispose()
