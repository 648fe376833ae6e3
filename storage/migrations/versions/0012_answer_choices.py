"""answer choices: 🔁 wrote a second answer to a reply; which one the person preferred (a DPO pair)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "answer_choices",
        sa.Column("id", id_type, nullable=False),
        sa.Column("turn_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("second_text", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(length=128), nullable=True),
        sa.Column("choice", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["turn_id"], ["turns.id"], name=op.f("fk_answer_choices_turn_id_turns"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_answer_choices_person_id_people"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answer_choices")),
        sa.UniqueConstraint("turn_id", name=op.f("uq_answer_choices_turn_id")),
    )
    op.create_index(op.f("ix_answer_choices_person_id"), "answer_choices", ["person_id"])
    op.create_index("ix_answer_choices_choice", "answer_choices", ["choice", "decided_at"])


def downgrade() -> None:
    op.drop_index("ix_answer_choices_choice", table_name="answer_choices")
    op.drop_index(op.f("ix_answer_choices_person_id"), table_name="answer_choices")
    op.drop_table("answer_choices")
