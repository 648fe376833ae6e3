"""The per-person limits' counts in the database, the same for every process on it (``core.limits``).

Each counted thing is a row of ``limit_events`` kept for the limit's window; a
person's old rows go when they are next counted, everyone's once in a while.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, Engine, delete, func, select, text
from sqlalchemy.orm import Session, aliased

from core.domain import Person, Role
from core.ports import LimitEvent
from storage.database import session_factory
from storage.tables import LimitEventRow, PersonRow, TurnRow

T = TypeVar("T")

SWEEP_EVERY_S = 600.0  # how often one process drops everyone's expired rows


class SqlLimitLedger:
    """``core.ports.LimitLedger`` on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        self._swept_at = float("-inf")

    def recent(self, person: Person, kind: str, since: float) -> list[LimitEvent]:
        with self._sessions() as session:
            return _recent(session, person, kind, since)

    def note(self, person: Person, kind: str, event: LimitEvent, since: float) -> None:
        with self._sessions.begin() as session:
            _drop_old(session, person, kind, since)
            session.add(_row(person, kind, event))
        self._sweep(since)

    def take(
        self,
        person: Person,
        kind: str,
        event: LimitEvent,
        since: float,
        judge: Callable[[list[LimitEvent]], T | None],
    ) -> T | None:
        with self._sessions.begin() as session:
            if self.engine.dialect.name == "postgresql":
                # Held to the end of the transaction: another process taking for this person waits here.
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(person, kind)})
            # On SQLite this write comes first on purpose: it takes the database's write lock for the
            # transaction, so no other process counts between the reading and the counting below.
            _drop_old(session, person, kind, since)
            verdict = judge(_recent(session, person, kind, since))
            if verdict is None:
                session.add(_row(person, kind, event))
        self._sweep(since)
        return verdict

    def unanswered(self, person: Person, within_s: float) -> int:
        reply = aliased(TurnRow)
        answered = select(reply.id).where(reply.reply_to_id == TurnRow.id).exists()
        query = (
            select(func.count())
            .select_from(TurnRow)
            .join(PersonRow, PersonRow.id == TurnRow.person_id)
            .where(
                PersonRow.platform == person.platform,
                PersonRow.user_id == person.user_id,
                TurnRow.role == Role.USER.value,
                TurnRow.error.is_(None),
                TurnRow.created_at > datetime.now(UTC) - timedelta(seconds=within_s),
                ~answered,
            )
        )
        with self._sessions() as session:
            return session.execute(query).scalar_one()

    def _sweep(self, since: float) -> None:
        """Drop everyone's expired rows, at most once every ``SWEEP_EVERY_S`` in this process."""
        if since - self._swept_at < SWEEP_EVERY_S:
            return
        self._swept_at = since
        with self._sessions.begin() as session:
            session.execute(delete(LimitEventRow).where(LimitEventRow.at <= since))


def _recent(session: Session, person: Person, kind: str, since: float) -> list[LimitEvent]:
    rows = session.execute(
        select(LimitEventRow.at, LimitEventRow.amount)
        .where(*_of(person, kind), LimitEventRow.at > since)
        .order_by(LimitEventRow.at, LimitEventRow.id)
    )
    return [LimitEvent(at, amount) for at, amount in rows]


def _drop_old(session: Session, person: Person, kind: str, since: float) -> None:
    session.execute(delete(LimitEventRow).where(*_of(person, kind), LimitEventRow.at <= since))


def _of(person: Person, kind: str) -> tuple[ColumnElement[bool], ...]:
    return (
        LimitEventRow.platform == person.platform,
        LimitEventRow.user_id == person.user_id,
        LimitEventRow.kind == kind,
    )


def _row(person: Person, kind: str, event: LimitEvent) -> LimitEventRow:
    return LimitEventRow(
        platform=person.platform, user_id=person.user_id, kind=kind, amount=event.amount, at=event.at
    )


def _lock_key(person: Person, kind: str) -> int:
    name = f"iris:limit:{kind}:{person.platform}:{person.user_id}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
