"""limit events: what each person did lately, counted by every process on one database

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "limit_events",
        sa.Column("id", id_type, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_events")),
    )
    op.create_index("ix_limit_events_person", "limit_events", ["platform", "user_id", "kind", "at"])
    op.create_index(op.f("ix_limit_events_at"), "limit_events", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_limit_events_at"), table_name="limit_events")
    op.drop_index("ix_limit_events_person", table_name="limit_events")
    op.drop_table("limit_events")
