"""web_admins: the web console's admins, each with a sign-in token of their own (only its hash)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    # No admin stored: IRIS_WEB_TOKEN (or the token printed at start) signs in, as before.
    op.create_table(
        "web_admins",
        sa.Column("id", id_type, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(128), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("session_key", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_admins")),
        sa.UniqueConstraint("name_key", name=op.f("uq_web_admins_name_key")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_web_admins_token_sha256")),
    )


def downgrade() -> None:
    op.drop_table("web_admins")
