"""Pending corrections in the database (``core.ports.PendingCorrections``).

Who pressed ✏️ and owes a better answer is a row, not a process's memory: several
``iris run`` processes share one database and any of them may receive the answer,
or one started after the press.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Engine, delete, select

from core.domain import ChatRef, Person
from storage.database import dialect_insert, session_factory
from storage.mapping import aware
from storage.tables import PendingCorrectionRow, utcnow


class SqlPendingCorrections:
    """``core.ports.PendingCorrections`` on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def expect(self, chat: ChatRef, person: Person, turn_id: int, stale: datetime) -> None:
        values = {
            "platform": person.platform,
            "chat_id": chat.chat_id,
            "user_id": person.user_id,
            "turn_id": turn_id,
            "created_at": utcnow(),
        }
        with self._sessions.begin() as session:
            session.execute(delete(PendingCorrectionRow).where(PendingCorrectionRow.created_at < stale))
            insert = dialect_insert(session, PendingCorrectionRow).values(**values)
            # One statement, so that two presses at once (two processes) leave one row, the later one.
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=[
                        PendingCorrectionRow.platform,
                        PendingCorrectionRow.chat_id,
                        PendingCorrectionRow.user_id,
                    ],
                    set_={"turn_id": turn_id, "created_at": values["created_at"]},
                )
            )

    def awaited(self, chat: ChatRef, person: Person, since: datetime) -> int | None:
        query = select(PendingCorrectionRow.turn_id).where(
            *_of(chat, person), PendingCorrectionRow.created_at > since
        )
        with self._sessions() as session:
            return session.execute(query).scalar_one_or_none()

    def drop(self, chat: ChatRef, person: Person, since: datetime) -> bool:
        with self._sessions.begin() as session:
            dropped = session.execute(
                delete(PendingCorrectionRow)
                .where(*_of(chat, person))
                .returning(PendingCorrectionRow.created_at)
            ).scalar_one_or_none()
        return dropped is not None and aware(dropped) > since

    def drop_person(self, person: Person) -> None:
        with self._sessions.begin() as session:
            session.execute(
                delete(PendingCorrectionRow).where(
                    PendingCorrectionRow.platform == person.platform,
                    PendingCorrectionRow.user_id == person.user_id,
                )
            )


def _of(chat: ChatRef, person: Person) -> tuple[ColumnElement[bool], ...]:
    return (
        PendingCorrectionRow.platform == person.platform,
        PendingCorrectionRow.chat_id == chat.chat_id,
        PendingCorrectionRow.user_id == person.user_id,
    )
