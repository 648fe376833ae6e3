"""What is stored about a person, as the console's People page shows it to an admin.

People are stored by platform and user id (``core.domain.Person``); once they used /forget
their row is gone and the audit trail names them by ``Person.pseudonym`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.domain import Person


@dataclass(frozen=True)
class PersonRecord:
    person: Person
    first_seen: datetime
    consent: bool | None  # None: they never said, and IRIS_FEEDBACK_CONSENT decides
    consent_at: datetime | None
    language: str | None  # their /language; None: detected from each message
    reply_voice: bool | None  # their /voice; None: IRIS_TTS_REPLIES decides
    conversations: int  # their own (private) ones
    turns: int  # their messages
    voice_turns: int
    ratings: int
    corrections: int
    last_seen: datetime | None  # their last message


class PeopleDirectory(Protocol):
    def person_record(self, person: Person) -> PersonRecord | None:
        """Everything counted about ``person`` (by platform and user id), or None when nothing is stored."""
        ...

    def find_people(self, text: str, limit: int) -> list[Person]:
        """People whose user id or display name holds ``text`` (case-insensitive), most recent first."""
        ...
