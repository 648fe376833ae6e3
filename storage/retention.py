"""Retention: conversations older than IRIS_CHAT_RETENTION_DAYS leave the database.

A conversation is old when its last turn (or, with none, its start) is before
the cutoff. An old conversation is deleted with its turns, ratings and
corrections, unless everyone in it (who spoke, rated or corrected) said yes
to training use and it carries feedback: then it is kept as training data
only, without identity. Its people are replaced by stand-ins of no platform
("retained", a random id, no name, consent yes), one per person, so that the
per-person cap of a dataset build still applies; its chat ids and platform
message ids are cleared, and it is closed, so no prompt sees it again. People
left with nothing stored and not seen since the cutoff are deleted too, with their
private chats' settings (``storage.personas.forget_settings``).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.domain import Person, PruneReport, Role
from storage.personas import forget_settings
from storage.tables import (
    ConversationRow,
    CorrectionMemoryRow,
    CorrectionRow,
    PersonRow,
    RatingRow,
    TurnRow,
    utcnow,
)

RETAINED = "retained"


def prune(session: Session, cutoff: datetime) -> PruneReport:
    """Apply the retention rule in ``session`` (the caller commits, or rolls back for a dry run)."""
    last_turn = (
        select(TurnRow.conversation_id, func.max(TurnRow.created_at).label("last"))
        .group_by(TurnRow.conversation_id)
        .subquery()
    )
    old = list(
        session.scalars(
            select(ConversationRow.id)
            .outerjoin(last_turn, last_turn.c.conversation_id == ConversationRow.id)
            .where(func.coalesce(last_turn.c.last, ConversationRow.started_at) < cutoff)
            .where(ConversationRow.platform != RETAINED)
        ).all()
    )
    people = _people_of(session, old)
    consenting = set(
        session.scalars(select(PersonRow.id).where(PersonRow.consent.is_(True), PersonRow.platform != RETAINED))
    )
    with_feedback = _with_feedback(session, old)
    kept = [c for c in old if c in with_feedback and people[c] and people[c] <= consenting]
    doomed = [c for c in old if c not in set(kept)]
    words = _words(session, doomed)
    report = _delete(session, doomed)
    _anonymise(session, kept, people)
    gone_people = _orphans(session, cutoff)
    for person_id, platform, user_id in session.execute(
        select(PersonRow.id, PersonRow.platform, PersonRow.user_id).where(PersonRow.id.in_(gone_people))
    ):
        forget_settings(session, person_id, Person(platform, user_id))
    session.execute(delete(PersonRow).where(PersonRow.id.in_(gone_people)))
    return PruneReport(
        conversations=len(doomed),
        turns=report["turns"],
        ratings=report["ratings"],
        corrections=report["corrections"],
        people=len(gone_people),
        kept_for_training=len(kept),
        cutoff=cutoff,
        words=words,
        conversation_ids=tuple(doomed),
    )


def _people_of(session: Session, conversations: list[int]) -> dict[int, set[int]]:
    """Everyone in each conversation: who spoke in it, rated or corrected a reply in it."""
    found: dict[int, set[int]] = defaultdict(set)
    if not conversations:
        return found
    in_old = TurnRow.conversation_id.in_(conversations)
    for conversation, person in session.execute(
        select(TurnRow.conversation_id, TurnRow.person_id).where(in_old)
    ):
        if person is not None:
            found[conversation].add(person)
    for table in (RatingRow, CorrectionRow):
        rows = session.execute(
            select(TurnRow.conversation_id, table.person_id)
            .join(TurnRow, TurnRow.id == table.turn_id)
            .where(in_old)
        )
        for conversation, person in rows:
            found[conversation].add(person)
    return found


def _with_feedback(session: Session, conversations: list[int]) -> set[int]:
    if not conversations:
        return set()
    found: set[int] = set()
    for table in (RatingRow, CorrectionRow):
        found |= set(
            session.scalars(
                select(TurnRow.conversation_id)
                .join(table, table.turn_id == TurnRow.id)
                .where(TurnRow.conversation_id.in_(conversations))
            )
        )
    return found


def _words(session: Session, conversations: list[int]) -> tuple[str, ...]:
    """What people said and proposed in these conversations, to find it in copies outside the database."""
    if not conversations:
        return ()
    in_them = TurnRow.conversation_id.in_(conversations)
    said = session.scalars(select(TurnRow.text).where(in_them, TurnRow.role == Role.USER.value)).all()
    proposed = session.scalars(
        select(CorrectionRow.text).join(TurnRow, TurnRow.id == CorrectionRow.turn_id).where(in_them)
    ).all()
    return tuple(dict.fromkeys(text for text in [*said, *proposed] if text))


def _delete(session: Session, conversations: list[int]) -> dict[str, int]:
    if not conversations:
        return {"turns": 0, "ratings": 0, "corrections": 0}
    turns = select(TurnRow.id).where(TurnRow.conversation_id.in_(conversations))
    counts = {
        "turns": _count(session, TurnRow, TurnRow.conversation_id.in_(conversations)),
        "ratings": _count(session, RatingRow, RatingRow.turn_id.in_(turns)),
        "corrections": _count(session, CorrectionRow, CorrectionRow.turn_id.in_(turns)),
    }
    # In dependency order, as /forget does: nothing relies on ON DELETE CASCADE.
    session.execute(delete(RatingRow).where(RatingRow.turn_id.in_(turns)))
    session.execute(
        delete(CorrectionMemoryRow).where(
            CorrectionMemoryRow.correction_id.in_(
                select(CorrectionRow.id).where(CorrectionRow.turn_id.in_(turns))
            )
        )
    )
    session.execute(delete(CorrectionRow).where(CorrectionRow.turn_id.in_(turns)))
    session.execute(
        delete(TurnRow).where(TurnRow.conversation_id.in_(conversations), TurnRow.role == Role.ASSISTANT.value)
    )
    session.execute(delete(TurnRow).where(TurnRow.conversation_id.in_(conversations)))
    session.execute(delete(ConversationRow).where(ConversationRow.id.in_(conversations)))
    return counts


def _anonymise(session: Session, conversations: list[int], people: dict[int, set[int]]) -> None:
    """Keep these conversations as training data: stand-ins for the people, no chat or message ids."""
    if not conversations:
        return
    stand_ins: dict[int, int] = {}
    for person in sorted(set().union(*(people[c] for c in conversations))):
        row = PersonRow(
            platform=RETAINED, user_id=uuid.uuid4().hex, display_name=None, consent=True, consent_at=utcnow()
        )
        session.add(row)
        session.flush()
        stand_ins[person] = row.id
    in_kept = TurnRow.conversation_id.in_(conversations)
    turn_ids = select(TurnRow.id).where(in_kept)
    for person, stand_in in stand_ins.items():
        session.execute(update(TurnRow).where(in_kept, TurnRow.person_id == person).values(person_id=stand_in))
        for table in (RatingRow, CorrectionRow):
            session.execute(
                update(table)
                .where(table.turn_id.in_(turn_ids), table.person_id == person)
                .values(person_id=stand_in)
            )
    session.execute(
        update(TurnRow).where(in_kept).values(platform=RETAINED, chat_id="", platform_message_id=None)
    )
    for conversation in conversations:
        owner = session.get_one(ConversationRow, conversation).owner_id
        session.execute(
            update(ConversationRow)
            .where(ConversationRow.id == conversation)
            .values(
                platform=RETAINED,
                chat_id=f"retained-{uuid.uuid4().hex}",
                thread_id="",
                owner_id=stand_ins.get(owner) if owner is not None else None,
                closed_at=func.coalesce(ConversationRow.closed_at, utcnow()),
            )
        )


def _orphans(session: Session, cutoff: datetime) -> list[int]:
    """People with nothing left stored and not seen since the cutoff (stand-ins with nothing left too)."""
    has_turns = select(TurnRow.person_id).where(TurnRow.person_id.is_not(None))
    has_ratings = select(RatingRow.person_id)
    has_corrections = select(CorrectionRow.person_id)
    owns = select(ConversationRow.owner_id).where(ConversationRow.owner_id.is_not(None))
    return list(
        session.scalars(
            select(PersonRow.id).where(
                PersonRow.id.not_in(has_turns),
                PersonRow.id.not_in(has_ratings),
                PersonRow.id.not_in(has_corrections),
                PersonRow.id.not_in(owns),
                or_(
                    PersonRow.platform == RETAINED,
                    and_(
                        PersonRow.created_at < cutoff,
                        or_(PersonRow.consent_at.is_(None), PersonRow.consent_at < cutoff),
                    ),
                ),
            )
        ).all()
    )


def _count(session: Session, table: Any, condition: Any) -> int:
    return session.scalar(select(func.count()).select_from(table).where(condition)) or 0
