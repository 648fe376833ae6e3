"""pending corrections: who pressed ✏️ and owes a better answer, seen by every process

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_corrections",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("turn_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_corrections")),
        sa.UniqueConstraint("platform", "chat_id", "user_id", name="uq_pending_corrections_person"),
    )
    op.create_index(op.f("ix_pending_corrections_created_at"), "pending_corrections", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_corrections_created_at"), table_name="pending_corrections")
    op.drop_table("pending_corrections")
