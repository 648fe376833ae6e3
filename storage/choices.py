"""🔁 answer pairs in the database (``core.choices.AnswerChoices``), and their read for the DPO export.

The row is also the claim: one second answer per reply, so the unique reply id settles
two presses at once (two processes) in the database, not in a process's memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Engine, delete, select, update
from sqlalchemy.orm import Session, aliased

from core.choices import AnswerPair, Pick, Question
from core.domain import ChatRef, Person, Role
from storage import people
from storage.database import dialect_insert, session_factory
from storage.mapping import aware, to_person
from storage.tables import AnswerChoiceRow, PersonRow, TurnRow, utcnow


class SqlAnswerChoices:
    """``core.choices.AnswerChoices`` on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def pair_of(self, turn_id: int) -> AnswerPair | None:
        with self._sessions() as session:
            return _pair(session, AnswerChoiceRow.turn_id == turn_id)

    def pair(self, pair_id: int) -> AnswerPair | None:
        with self._sessions() as session:
            return _pair(session, AnswerChoiceRow.id == pair_id)

    def question(self, reply_id: int) -> Question | None:
        reply, asked = aliased(TurnRow), aliased(TurnRow)
        query = (
            select(asked)
            .join(reply, reply.reply_to_id == asked.id)
            .where(reply.id == reply_id, reply.role == Role.ASSISTANT.value, asked.text.is_not(None))
        )
        with self._sessions() as session:
            row = session.scalars(query).one_or_none()
            return None if row is None or not row.text else Question(row.conversation_id, row.id, row.text)

    def start(self, turn_id: int, person: Person, stale: datetime) -> AnswerPair | None:
        now = utcnow()
        with self._sessions.begin() as session:
            person_id = people.upsert(session, person).id
            insert = dialect_insert(session, AnswerChoiceRow).values(
                turn_id=turn_id, person_id=person_id, created_at=now
            )
            # One statement: of two presses at once only one inserts, or takes over a stale claim.
            claimed = session.execute(
                insert.on_conflict_do_update(
                    index_elements=[AnswerChoiceRow.turn_id],
                    set_={"person_id": person_id, "created_at": now, "choice": None, "decided_at": None},
                    where=(AnswerChoiceRow.second_text.is_(None)) & (AnswerChoiceRow.created_at < stale),
                ).returning(AnswerChoiceRow.id)
            ).scalar_one_or_none()
        return None if claimed is None else self.pair(claimed)

    def finish(self, pair: AnswerPair, text: str, model_version: str) -> bool:
        with self._sessions.begin() as session:
            done = session.execute(
                update(AnswerChoiceRow)
                .where(*_held(pair))
                .values(second_text=text, model_version=model_version, written_at=utcnow())
                .returning(AnswerChoiceRow.id)
            ).first()
        return done is not None

    def drop(self, pair: AnswerPair) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(AnswerChoiceRow).where(*_held(pair)))

    def decide(self, pair_id: int, pick: Pick) -> bool:
        with self._sessions.begin() as session:
            done = session.execute(
                update(AnswerChoiceRow)
                .where(
                    AnswerChoiceRow.id == pair_id,
                    AnswerChoiceRow.second_text.is_not(None),
                    AnswerChoiceRow.exported_at.is_(None),
                )
                .values(choice=pick.value, decided_at=utcnow())
                .returning(AnswerChoiceRow.id)
            ).first()
        return done is not None

    def forget(self, person: Person) -> list[int]:
        with self._sessions.begin() as session:
            row = people.find(session, person)
            if row is None:
                return []
            return list(
                session.scalars(
                    delete(AnswerChoiceRow)
                    .where(AnswerChoiceRow.person_id == row.id)
                    .returning(AnswerChoiceRow.turn_id)
                ).all()
            )


def _held(pair: AnswerPair) -> tuple[ColumnElement[bool], ...]:
    # The claim this writer holds: a takeover after it went stale renews ``created_at``.
    return (
        AnswerChoiceRow.id == pair.id,
        AnswerChoiceRow.second_text.is_(None),
        AnswerChoiceRow.created_at == pair.started_at,
    )


def _pair(session: Session, where: ColumnElement[bool]) -> AnswerPair | None:
    query = (
        select(AnswerChoiceRow, TurnRow, PersonRow)
        .join(TurnRow, TurnRow.id == AnswerChoiceRow.turn_id)
        .join(PersonRow, PersonRow.id == AnswerChoiceRow.person_id)
        .where(where)
    )
    found = session.execute(query).one_or_none()
    if found is None:
        return None
    row, reply, person = found
    return AnswerPair(
        id=row.id,
        turn_id=row.turn_id,
        person=to_person(person),
        first=reply.text or "",
        second=row.second_text,
        model_version=row.model_version,
        pick=Pick(row.choice) if row.choice else None,
        started_at=aware(row.created_at),
        exported=row.exported_at is not None,
        chat=ChatRef(reply.platform, reply.chat_id),
    )


# --- the export's read (finetune.feedback) ------------------------------------------------


@dataclass(frozen=True)
class ChoiceRecord:
    """A picked pair as the export sees it: the reply, the second answer, who asked and who picked."""

    id: int
    reply_id: int
    conversation_id: int
    first: str
    second: str
    first_model: str | None
    second_model: str | None
    pick: Pick
    chooser_id: int
    asker_id: int | None
    decided_at: datetime


def picked(engine: Engine, since: datetime | None = None, until: datetime | None = None) -> list[ChoiceRecord]:
    """Every pair with a pick, by when it was picked (``until`` exclusive), oldest first."""
    reply, asked = aliased(TurnRow), aliased(TurnRow)
    query = (
        select(AnswerChoiceRow, reply, asked.person_id)
        .join(reply, reply.id == AnswerChoiceRow.turn_id)
        .outerjoin(asked, asked.id == reply.reply_to_id)
        .where(AnswerChoiceRow.choice.is_not(None), AnswerChoiceRow.second_text.is_not(None))
        .order_by(AnswerChoiceRow.id)
    )
    if since is not None:
        query = query.where(AnswerChoiceRow.decided_at >= _utc(since))
    if until is not None:
        query = query.where(AnswerChoiceRow.decided_at < _utc(until))
    with session_factory(engine)() as session:
        return [
            ChoiceRecord(
                id=row.id,
                reply_id=turn.id,
                conversation_id=turn.conversation_id,
                first=turn.text or "",
                second=row.second_text or "",
                first_model=turn.model_version,
                second_model=row.model_version,
                pick=Pick(row.choice or Pick.NEITHER),
                chooser_id=row.person_id,
                asker_id=asker_id,
                decided_at=aware(row.decided_at or row.created_at),
            )
            for row, turn, asker_id in session.execute(query).all()
        ]


def mark_exported(engine: Engine, pair_ids: Iterable[int]) -> None:
    """An export used these pairs: their picks no longer change (what was trained on stays true)."""
    ids = sorted(set(pair_ids))
    with session_factory(engine).begin() as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            session.execute(
                update(AnswerChoiceRow)
                .where(AnswerChoiceRow.id.in_(chunk), AnswerChoiceRow.exported_at.is_(None))
                .values(exported_at=utcnow())
            )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
