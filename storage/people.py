"""People by platform and user id: the one lookup, and a get-or-create that concurrent writers cannot race."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.domain import Person
from storage.database import dialect_insert
from storage.tables import PersonRow


def find(session: Session, person: Person) -> PersonRow | None:
    """The stored row of ``person``, or None if Iris has never seen them."""
    return session.scalars(
        select(PersonRow).where(PersonRow.platform == person.platform, PersonRow.user_id == person.user_id)
    ).one_or_none()


def upsert(session: Session, person: Person, **values: object) -> PersonRow:
    """``person``'s row, created on first sight, in one ``INSERT … ON CONFLICT … RETURNING``.

    Two threads meeting a new person at once end with one row and the same id.
    A display name replaces the stored one (a missing or empty one keeps it);
    ``values`` (say ``consent``) are set on the new row or the existing one.
    """
    insert = dialect_insert(session, PersonRow).values(
        platform=person.platform, user_id=person.user_id, display_name=person.display_name, **values
    )
    name = func.coalesce(func.nullif(insert.excluded.display_name, ""), PersonRow.display_name)
    statement = insert.on_conflict_do_update(
        index_elements=[PersonRow.platform, PersonRow.user_id],
        set_={"display_name": name, **{column: insert.excluded[column] for column in values}},
    ).returning(PersonRow)
    # The statement may have changed a row this session already holds: refresh it.
    return session.scalars(statement, execution_options={"populate_existing": True}).one()
