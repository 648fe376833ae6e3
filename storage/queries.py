"""Read queries for training data, review and statistics (used by ``finetune`` and the CLI).

Everything here returns frozen dataclasses or core types; no ORM row leaves
``storage``. Times are timezone-aware UTC. Filters on ``since``/``until`` take
aware or naive datetimes (naive ones are read as UTC); ``until`` is exclusive.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, aliased

from core.domain import ChatRef, CorrectionStatus, Person, Role
from core.ports import UnansweredTurn
from core.watch import ModelDay, TurnDay
from storage import people
from storage.database import session_factory
from storage.mapping import aware
from storage.tables import ConversationRow, CorrectionRow, PersonRow, RatingRow, TurnRow, utcnow

# Stay well under SQLite's bound-parameter limit in IN (...) lists.
_CHUNK = 500


@dataclass(frozen=True)
class Speaker:
    """A person as the training-data export sees them: who, and what they agreed to."""

    id: int
    person: Person
    consent: bool | None


@dataclass(frozen=True)
class ContextTurn:
    """An answered turn of a conversation, with whose words it carries.

    ``person_id`` is the speaker of a person's turn, and for a reply the person
    whose turn it answers (a reply repeats what it was asked).
    """

    id: int
    role: Role
    text: str
    person_id: int | None
    created_at: datetime
    from_voice: bool = False
    reply_to_id: int | None = None


@dataclass(frozen=True)
class RatingRecord:
    """One person's current 👍 (+1) or 👎 (-1) on one of the bot's replies."""

    id: int
    reply_id: int
    conversation_id: int
    reply: str
    model_version: str | None
    value: int
    rater_id: int
    asker_id: int | None
    rated_at: datetime
    persona: str | None = None  # the persona whose prompt wrote the reply (core.personas)
    language: str | None = None  # the language of the person's turn it answers (core.languages)


@dataclass(frozen=True)
class CorrectionRecord:
    """A better answer someone proposed for a reply, and what review made of it."""

    id: int
    reply_id: int
    conversation_id: int
    reply: str
    model_version: str | None
    text: str
    status: CorrectionStatus
    author_id: int
    asker_id: int | None
    created_at: datetime
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    persona: str | None = None  # the persona whose prompt wrote the reply (core.personas)
    language: str | None = None  # the language of the person's turn it answers (core.languages)


@dataclass(frozen=True)
class DailyCorrections:
    """Corrections proposed on ``day``, by the status they have now."""

    day: date
    pending: int
    approved: int
    rejected: int


@dataclass(frozen=True)
class Activity:
    """Day-by-day figures (UTC days) for ``iris stats --plot``."""

    models: list[ModelDay] = field(default_factory=list)
    turns: list[TurnDay] = field(default_factory=list)
    corrections: list[DailyCorrections] = field(default_factory=list)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _between(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    conditions = []
    if (start := _utc(since)) is not None:
        conditions.append(column >= start)
    if (end := _utc(until)) is not None:
        conditions.append(column < end)
    return conditions


def _session(engine: Engine) -> Session:
    return session_factory(engine)()


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def unanswered_turns(engine: Engine, platform: str, since: datetime, until: datetime) -> list[UnansweredTurn]:
    """People's turns of a platform stored in [since, until) with a message id, no reply and no error.

    What a process that stopped left unanswered; oldest first, so people are answered in order.
    """
    reply = aliased(TurnRow)
    answered = select(reply.id).where(reply.reply_to_id == TurnRow.id).exists()
    query = (
        select(TurnRow, ConversationRow.thread_id)
        .join(ConversationRow, ConversationRow.id == TurnRow.conversation_id)
        .where(
            TurnRow.platform == platform,
            TurnRow.role == Role.USER.value,
            TurnRow.platform_message_id.is_not(None),
            TurnRow.error.is_(None),
            ~answered,
            *_between(TurnRow.created_at, since, until),
        )
        .order_by(TurnRow.id)
    )
    with _session(engine) as session:
        return [
            UnansweredTurn(
                turn_id=row.id,
                conversation_id=row.conversation_id,
                chat=ChatRef(row.platform, row.chat_id, thread_id or None),
                message_id=row.platform_message_id or "",
                from_voice=row.from_voice,
                created_at=aware(row.created_at),
            )
            for row, thread_id in session.execute(query).all()
        ]


def ratings(engine: Engine, since: datetime | None = None, until: datetime | None = None) -> list[RatingRecord]:
    """Every current rating on a reply, by when it was last set, oldest first."""
    reply, asked = aliased(TurnRow), aliased(TurnRow)
    query = (
        select(RatingRow, reply, asked.person_id, asked.language)
        .join(reply, reply.id == RatingRow.turn_id)
        .outerjoin(asked, asked.id == reply.reply_to_id)
        .where(reply.role == Role.ASSISTANT.value, reply.text.is_not(None))
        .where(*_between(RatingRow.updated_at, since, until))
        .order_by(RatingRow.id)
    )
    with _session(engine) as session:
        return [
            RatingRecord(
                id=rating.id,
                reply_id=turn.id,
                conversation_id=turn.conversation_id,
                reply=turn.text or "",
                model_version=turn.model_version,
                value=rating.value,
                rater_id=rating.person_id,
                asker_id=asker_id,
                rated_at=aware(rating.updated_at),
                persona=turn.persona,
                language=language,
            )
            for rating, turn, asker_id, language in session.execute(query).all()
        ]


def corrections(
    engine: Engine,
    status: CorrectionStatus | None = CorrectionStatus.APPROVED,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[CorrectionRecord]:
    """Corrections in ``status`` (all when None), oldest first.

    ``since``/``until`` apply to when a correction was reviewed (for pending
    ones, when it was proposed), so an export picks up what was approved since
    the last one.
    """
    reply, asked = aliased(TurnRow), aliased(TurnRow)
    query = (
        select(CorrectionRow, reply, asked.person_id, asked.language)
        .join(reply, reply.id == CorrectionRow.turn_id)
        .outerjoin(asked, asked.id == reply.reply_to_id)
        .order_by(CorrectionRow.id)
    )
    if status is not None:
        query = query.where(CorrectionRow.status == status.value)
    when = CorrectionRow.created_at if status is CorrectionStatus.PENDING else CorrectionRow.reviewed_at
    query = query.where(*_between(when, since, until))
    with _session(engine) as session:
        return [
            CorrectionRecord(
                id=row.id,
                reply_id=turn.id,
                conversation_id=turn.conversation_id,
                reply=turn.text or "",
                model_version=turn.model_version,
                text=row.text,
                status=CorrectionStatus(row.status),
                author_id=row.person_id,
                asker_id=asker_id,
                created_at=aware(row.created_at),
                reviewer=row.reviewer,
                reviewed_at=aware(row.reviewed_at) if row.reviewed_at else None,
                persona=turn.persona,
                language=language,
            )
            for row, turn, asker_id, language in session.execute(query).all()
        ]


def conversation_turns(engine: Engine, conversation_ids: Iterable[int]) -> dict[int, list[ContextTurn]]:
    """The answered turns (no failures, no empty text) of each conversation, in order."""
    asked = aliased(TurnRow)
    found: dict[int, list[ContextTurn]] = defaultdict(list)
    with _session(engine) as session:
        for chunk in _chunks(conversation_ids):
            query = (
                select(TurnRow, asked.person_id)
                .outerjoin(asked, asked.id == TurnRow.reply_to_id)
                .where(
                    TurnRow.conversation_id.in_(chunk),
                    TurnRow.error.is_(None),
                    TurnRow.text.is_not(None),
                )
                .order_by(TurnRow.conversation_id, TurnRow.id)
            )
            for turn, asker_id in session.execute(query).all():
                found[turn.conversation_id].append(
                    ContextTurn(
                        id=turn.id,
                        role=Role(turn.role),
                        text=turn.text or "",
                        person_id=turn.person_id if turn.role == Role.USER.value else asker_id,
                        created_at=aware(turn.created_at),
                        from_voice=turn.from_voice,
                        reply_to_id=turn.reply_to_id,
                    )
                )
    return dict(found)


def speakers(engine: Engine, ids: Iterable[int] | None = None) -> dict[int, Speaker]:
    """People by id (all of them when ``ids`` is None), with their consent."""
    with _session(engine) as session:
        if ids is None:
            rows: Sequence[PersonRow] = session.scalars(select(PersonRow)).all()
        else:
            rows = [
                row
                for chunk in _chunks(ids)
                for row in session.scalars(select(PersonRow).where(PersonRow.id.in_(chunk))).all()
            ]
        return {
            row.id: Speaker(row.id, Person(row.platform, row.user_id, row.display_name), row.consent)
            for row in rows
        }


def set_consent(engine: Engine, person: Person, consent: bool | None) -> Speaker:
    """Record whether ``person`` agrees to training use (None: let the setting decide).

    Creates the person if they have not talked to the bot yet, so that a "no"
    given first holds from their first message on.
    """
    with session_factory(engine).begin() as session:
        row = people.upsert(session, person, consent=consent, consent_at=utcnow())
        return Speaker(row.id, Person(row.platform, row.user_id, row.display_name), row.consent)


def activity(engine: Engine) -> Activity:
    """Replies, ratings, turns and corrections per UTC day (ratings on the day of the reply)."""
    with _session(engine) as session:
        replies = session.execute(
            select(TurnRow.id, TurnRow.created_at, TurnRow.model_version, RatingRow.value)
            .outerjoin(RatingRow, RatingRow.turn_id == TurnRow.id)
            .where(TurnRow.role == Role.ASSISTANT.value)
        ).all()
        turns = session.execute(
            select(TurnRow.created_at, TurnRow.from_voice).where(TurnRow.role == Role.USER.value)
        ).all()
        proposed = session.execute(select(CorrectionRow.created_at, CorrectionRow.status)).all()
    return Activity(
        models=_daily_models(replies),
        turns=_daily_turns(turns),
        corrections=_daily_corrections(proposed),
    )


def _day(moment: datetime) -> date:
    return aware(moment).astimezone(UTC).date()


def _daily_models(rows: Sequence[Any]) -> list[ModelDay]:
    reply_ids: dict[tuple[date, str], set[int]] = defaultdict(set)
    votes: Counter[tuple[date, str, int]] = Counter()
    for reply_id, created_at, model, value in rows:
        key = (_day(created_at), model or "?")
        reply_ids[key].add(reply_id)
        if value is not None:
            votes[(*key, 1 if value > 0 else -1)] += 1
    return [
        ModelDay(day, model, len(ids), votes[(day, model, 1)], votes[(day, model, -1)])
        for (day, model), ids in sorted(reply_ids.items())
    ]


def _daily_turns(rows: Sequence[Any]) -> list[TurnDay]:
    total: Counter[date] = Counter()
    voice: Counter[date] = Counter()
    for created_at, from_voice in rows:
        total[_day(created_at)] += 1
        voice[_day(created_at)] += bool(from_voice)
    return [TurnDay(day, total[day] - voice[day], voice[day]) for day in sorted(total)]


def _daily_corrections(rows: Sequence[Any]) -> list[DailyCorrections]:
    counts: Counter[tuple[date, str]] = Counter((_day(created_at), status) for created_at, status in rows)
    days = sorted({day for day, _status in counts})
    return [
        DailyCorrections(
            day,
            counts[(day, CorrectionStatus.PENDING.value)],
            counts[(day, CorrectionStatus.APPROVED.value)],
            counts[(day, CorrectionStatus.REJECTED.value)],
        )
        for day in days
    ]
