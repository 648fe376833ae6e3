"""languages: each turn's language, its probability and a reply's asked language; each person's /language

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Turns stored before this revision keep NULL: their language was never detected.
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(8), nullable=True))
        batch_op.add_column(sa.Column("language_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("asked_language", sa.String(8), nullable=True))
        batch_op.create_index("ix_turns_language", ["language"], unique=False)
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_column("language")
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_index("ix_turns_language")
        batch_op.drop_column("asked_language")
        batch_op.drop_column("language_probability")
        batch_op.drop_column("language")
