"""personas: named system prompts, each chat's choice of one, and the persona that wrote each reply

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    # No persona stored: IRIS_CHAT_SYSTEM_PROMPT answers every chat, as before this revision.
    op.create_table(
        "personas",
        sa.Column("id", id_type, nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("voice", sa.String(64), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("greeting", sa.Text(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=True),
        sa.Column("updated_by", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_personas")),
        sa.UniqueConstraint("name", name=op.f("uq_personas_name")),
        sa.UniqueConstraint("is_default", name=op.f("uq_personas_is_default")),
    )
    op.create_table(
        "chat_settings",
        sa.Column("id", id_type, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("chat_id", sa.String(128), nullable=False),
        sa.Column("persona", sa.String(40), nullable=True),
        sa.Column("spoken_replies", sa.String(16), nullable=True),
        sa.Column("reply_length", sa.String(16), nullable=True),
        sa.Column("history_turns", sa.Integer(), nullable=True),
        sa.Column("updated_by", sa.String(256), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_settings")),
        sa.UniqueConstraint("platform", "chat_id", name="uq_chat_settings_chat"),
    )
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("persona", sa.String(40), nullable=True))
        batch_op.add_column(sa.Column("persona_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_column("persona_version")
        batch_op.drop_column("persona")
    op.drop_table("chat_settings")
    op.drop_table("personas")
