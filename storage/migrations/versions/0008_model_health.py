"""model health: why a registered version's file last failed to load or answer

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("load_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("load_error_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("load_error_at")
        batch.drop_column("load_error")
