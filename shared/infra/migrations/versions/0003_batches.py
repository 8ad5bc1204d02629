"""batches: a payout's output and fee share in its transaction; a transaction's size

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vout", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("fee_share_sats", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vsize", sa.Integer(), nullable=True))
        # Cursor paging of GET /v1/transactions walks (created_at, id).
        batch_op.create_index("ix_transactions_created", ["created_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_transactions_created")
        batch_op.drop_column("vsize")
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_column("fee_share_sats")
        batch_op.drop_column("vout")
