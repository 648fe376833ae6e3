"""Spoken replies in the database, on SQLite and PostgreSQL: each person's /voice choice and each
reply's spoken length, time and (only when asked) audio; /forget takes the choice with the person."""

from __future__ import annotations

from sqlalchemy import select

from core.domain import ChatRef, Person, Timings
from storage.repository import SqlStore
from storage.tables import TurnRow
from storage.voices import SqlVoicePreferences

ADA = Person("test", "ada", "Ada")
CHAT = ChatRef("test", "chat")


def test_voice_choice_speech_timings_and_forget(store: SqlStore) -> None:
    voices = SqlVoicePreferences(store.engine)
    assert voices.voice_preference(ADA) is None  # never seen: the deployment's mode decides
    voices.set_voice_preference(ADA, True)
    assert voices.voice_preference(ADA) is True
    voices.set_voice_preference(ADA, False)
    assert voices.voice_preference(ADA) is False

    asked = store.record_user_turn(CHAT, ADA, text="Hi", from_voice=False, message_id="1", shared_history=False)
    reply = store.record_reply(asked.conversation_id, asked.turn_id, "Hello!", "m", Timings(generate_ms=5.0))
    voices.record_speech(reply, 1.25, 80.0, b"OggS-audio")
    turn = store.get_turn(reply)
    assert turn is not None and turn.timings.spoken_seconds == 1.25 and turn.timings.speak_ms == 80.0
    with store.engine.connect() as connection:
        assert connection.scalar(select(TurnRow.spoken_audio).where(TurnRow.id == reply)) == b"OggS-audio"

    store.forget(ADA)
    assert voices.voice_preference(ADA) is None and store.get_turn(reply) is None
