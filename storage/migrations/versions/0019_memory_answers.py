"""correction_memory: each correction's approved answer as a row of its own, for the answer check

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("correction_memory", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_answer", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("correction_memory", schema=None) as batch_op:
        batch_op.drop_column("is_answer")
