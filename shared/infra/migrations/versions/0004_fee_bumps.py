"""fee bumps: versions of a transaction, and every version's payouts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replaces_txid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("original_txid", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_transactions_replaces", ["replaces_txid"])
        batch_op.create_index("ix_transactions_original", ["original_txid"])
    op.create_table(
        "transaction_payouts",
        sa.Column("tx_id", sa.Uuid(), nullable=False),
        sa.Column("payout_id", sa.Uuid(), nullable=False),
        sa.Column("vout", sa.Integer(), nullable=True),
        sa.Column("fee_share_sats", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["payout_id"], ["payouts.id"]),
        sa.ForeignKeyConstraint(["tx_id"], ["transactions.id"]),
        sa.PrimaryKeyConstraint("tx_id", "payout_id"),
    )
    with op.batch_alter_table("transaction_payouts", schema=None) as batch_op:
        batch_op.create_index("ix_transaction_payouts_payout", ["payout_id"])
    # Every payout that names a transaction today is paid by it.
    op.execute(
        "INSERT INTO transaction_payouts (tx_id, payout_id, vout, fee_share_sats) "
        "SELECT tx_id, id, vout, fee_share_sats FROM payouts WHERE tx_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("transaction_payouts", schema=None) as batch_op:
        batch_op.drop_index("ix_transaction_payouts_payout")
    op.drop_table("transaction_payouts")
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_transactions_original")
        batch_op.drop_index("ix_transactions_replaces")
        batch_op.drop_column("original_txid")
        batch_op.drop_column("replaces_txid")
