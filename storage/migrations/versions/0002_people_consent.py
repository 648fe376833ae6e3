"""people consent: whether a person's words may become training data

NULL means the person never said; the IRIS_FEEDBACK_CONSENT setting (opt-in or
opt-out) decides for them. Generated with alembic autogenerate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:27:18.867927
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consent', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('consent_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_column('consent_at')
        batch_op.drop_column('consent')
