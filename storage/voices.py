"""Spoken replies in the database: each person's ``/voice`` choice and what each reply's voice note cost.

The choice is a column of the person's row and the audio a column of the reply's, so ``/forget``
and retention delete both with the rows they belong to.
"""

from __future__ import annotations

from sqlalchemy import Engine, update

from core.domain import Person
from storage import people
from storage.database import session_factory
from storage.tables import TurnRow


class SqlVoicePreferences:
    """``core.ports.VoicePreferences`` over SQLAlchemy."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def voice_preference(self, person: Person) -> bool | None:
        with self._sessions() as session:
            row = people.find(session, person)
            return None if row is None else row.reply_voice

    def set_voice_preference(self, person: Person, on: bool | None) -> None:
        with self._sessions.begin() as session:
            people.upsert(session, person, reply_voice=on)

    def record_speech(self, turn_id: int, seconds: float, speak_ms: float, audio: bytes | None) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(TurnRow)
                .where(TurnRow.id == turn_id)
                .values(spoken_seconds=seconds, speak_ms=speak_ms, spoken_audio=audio)
            )
