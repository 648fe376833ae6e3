"""spoken replies: each person's /voice choice, and each reply's spoken length, time and audio

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("people") as batch:
        batch.add_column(sa.Column("reply_voice", sa.Boolean(), nullable=True))
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("speak_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("spoken_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("spoken_audio", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("spoken_audio")
        batch.drop_column("spoken_seconds")
        batch.drop_column("speak_ms")
    with op.batch_alter_table("people") as batch:
        batch.drop_column("reply_voice")
