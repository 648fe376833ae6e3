"""correction memory: approved corrections' question wordings and their embeddings; which served a reply

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 12:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    # Corrections approved before this revision are indexed by the bot on start (CorrectionMemory.sync).
    op.create_table(
        "correction_memory",
        sa.Column("id", id_type, nullable=False),
        sa.Column("correction_id", id_type, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("wording", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("negative", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_correction_memory")),
        sa.ForeignKeyConstraint(
            ["correction_id"],
            ["corrections.id"],
            name=op.f("fk_correction_memory_correction_id_corrections"),
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_correction_memory_correction_id", "correction_memory", ["correction_id"])
    op.create_index("ix_correction_memory_model", "correction_memory", ["model", "id"])
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory_correction_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("memory_mode", sa.String(16), nullable=True))
        batch_op.create_index("ix_turns_memory_correction_id", ["memory_correction_id"])


def downgrade() -> None:
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_index("ix_turns_memory_correction_id")
        batch_op.drop_column("memory_mode")
        batch_op.drop_column("memory_correction_id")
    op.drop_index("ix_correction_memory_model", table_name="correction_memory")
    op.drop_index("ix_correction_memory_correction_id", table_name="correction_memory")
    op.drop_table("correction_memory")
