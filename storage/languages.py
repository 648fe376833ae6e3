"""Languages in the database (``core.languages``): each turn's, each person's ``/language``, the stats.

A person's choice is a column of their row and a turn's language columns of the turn's, so
``/forget`` and retention delete them with the rows they belong to.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.domain import Person, Role
from storage import people
from storage.tables import TurnRow


@dataclass(frozen=True)
class LanguageFigures:
    """People's messages by language (None: not detected), and replies not in the asked language."""

    by_language: list[tuple[str | None, int]]
    replies_off_language: int


class LanguageRows:
    """``core.ports.LanguageStore``, mixed into ``storage.repository.SqlStore`` (its ``_session``)."""

    _session: Callable[[], AbstractContextManager[Session]]

    def language_preference(self, person: Person) -> str | None:
        with self._session() as session:
            row = people.find(session, person)
            return None if row is None else row.language

    def set_language_preference(self, person: Person, code: str | None) -> None:
        with self._session() as session:
            people.upsert(session, person, language=code)

    def set_turn_language(
        self, turn_id: int, code: str | None, probability: float | None, asked: str | None = None
    ) -> None:
        with self._session() as session:
            session.execute(
                update(TurnRow)
                .where(TurnRow.id == turn_id)
                .values(language=code, language_probability=probability, asked_language=asked)
            )


def figures(session: Session) -> LanguageFigures:
    """What ``iris stats`` shows about languages (one query each)."""
    by_language = session.execute(
        select(TurnRow.language, func.count())
        .where(TurnRow.role == Role.USER.value)
        .group_by(TurnRow.language)
        .order_by(func.count().desc(), TurnRow.language)
    ).all()
    off = session.scalar(
        select(func.count())
        .select_from(TurnRow)
        .where(
            TurnRow.role == Role.ASSISTANT.value,
            TurnRow.asked_language.is_not(None),
            TurnRow.language.is_not(None),
            TurnRow.language != TurnRow.asked_language,
        )
    )
    return LanguageFigures([(language, count) for language, count in by_language], off or 0)
