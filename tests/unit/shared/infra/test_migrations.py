"""The Alembic migrations create exactly the schema the models describe, and undo cleanly."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from shared.core.models import Base
from shared.infra.migrate import downgrade, upgrade


def test_upgrade_matches_the_models_and_downgrade_removes_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    downgrade(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
