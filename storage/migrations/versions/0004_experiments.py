"""experiments: A/B tests of model versions, and each reply's experiment and arm

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", ID, nullable=False),
        sa.Column("candidate", sa.String(length=128), nullable=False),
        sa.Column("control", sa.String(length=128), nullable=True),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("min_ratings", sa.Integer(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(length=256), nullable=True),
        sa.Column("running", sa.Boolean(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decided_by", sa.String(length=256), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("running", name=op.f("uq_experiments_running")),
    )
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("experiment_id", ID, nullable=True))
        batch_op.add_column(sa.Column("arm", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_turns_experiment_id"), ["experiment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_turns_experiment_id"))
        batch_op.drop_column("arm")
        batch_op.drop_column("experiment_id")
    op.drop_table("experiments")
