"""A person's stored data counted for the console (``core.people_directory``): one grouped query each."""

from __future__ import annotations

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from core.domain import Person, Role
from core.people_directory import PersonRecord
from storage import people
from storage.database import session_factory
from storage.mapping import aware, to_person
from storage.tables import ConversationRow, CorrectionRow, PersonRow, RatingRow, TurnRow


class SqlPeopleDirectory:
    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def person_record(self, person: Person) -> PersonRecord | None:
        with self._sessions() as session:
            row = people.find(session, person)
            if row is None:
                return None
            turns, voice, last = session.execute(
                select(
                    func.count(), func.count().filter(TurnRow.from_voice), func.max(TurnRow.created_at)
                ).where(TurnRow.person_id == row.id, TurnRow.role == Role.USER.value)
            ).one()

            def count(column: InstrumentedAttribute[int | None] | InstrumentedAttribute[int]) -> int:
                return session.scalar(select(func.count()).where(column == row.id)) or 0

            return PersonRecord(
                person=to_person(row),
                first_seen=aware(row.created_at),
                consent=row.consent,
                consent_at=aware(row.consent_at) if row.consent_at else None,
                language=row.language,
                reply_voice=row.reply_voice,
                conversations=count(ConversationRow.owner_id),
                turns=turns,
                voice_turns=voice,
                ratings=count(RatingRow.person_id),
                corrections=count(CorrectionRow.person_id),
                last_seen=aware(last) if last else None,
            )

    def find_people(self, text: str, limit: int) -> list[Person]:
        matches = or_(
            PersonRow.user_id.icontains(text, autoescape=True),
            PersonRow.display_name.icontains(text, autoescape=True),
        )
        query = select(PersonRow).where(matches).order_by(PersonRow.id.desc()).limit(limit)
        with self._sessions() as session:
            return [to_person(row) for row in session.scalars(query)]
