"""Six languages through the real discord.py client (issue #28, done-when): a voice message in each
language the bundled whisper ``base`` hears (espeak-ng voices, ``tests/fixtures/languages``), from
someone who chose that language with /language (a Discord message carries no locale), is shown
back as its words, stored with its language, answered with buttons in that language, and the
reply (a scripted one in that language) is spoken in a voice of that language; its 👍 is thanked
and its ✏️ form titled in that language (the buttons themselves are emoji).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text as sql

from bench.languages import Note, word_accuracy
from bots.app import App
from core.i18n import translate
from core.transcription import WhisperTranscriber
from tests.discord.conftest import discord_settings, finished_reply, running, shown, turn_of
from tests.discord.fake_discord import FakeDiscord
from tests.discord.test_discord_voice_replies import audio_replies, uploaded
from tests.discord.test_language_discord import language
from tests.test_speech_languages import HEARD_WELL, REPLIES, answer_in

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SUGGEST = "Suggest a better answer"  # the ✏️ form's title


@pytest.mark.parametrize("note", HEARD_WELL, ids=lambda note: note.name)
async def test_a_voice_message_is_heard_answered_and_spoken_in_its_language(
    fake: FakeDiscord,
    app: App,
    tmp_path: Path,
    served_gguf: Path,
    multilingual_transcriber: WhisperTranscriber,
    note: Note,
) -> None:
    said_in = answer_in(app, multilingual_transcriber, note.language)  # base, the default
    person = fake.add_user("sam")
    async with running(app.service, discord_settings(tmp_path, served_gguf, fake), fake):
        await language(fake, person, note.language)
        sent = await fake.post(person, attachments=[fake.attachment(note.audio, duration=10)], dm=True)
        reply = await finished_reply(fake, sent)
        (spoken,) = await fake.wait_for(lambda: audio_replies(fake, sent), 60, "a voice message")
        turn = turn_of(reply)
        thanked = await shown(fake, await fake.press(int(reply["id"]), f"iris:rate:up:{turn}", person))
        form = await fake.press(int(reply["id"]), f"iris:fix:{turn}", person)
        await fake.wait_for(lambda: form.modal, 30, "the form")

    transcript = fake.replies_to(int(sent["id"]))[0]["content"]
    assert transcript.startswith("🎤")
    assert word_accuracy(note.text, transcript.removeprefix("🎤")) >= 0.8, transcript
    with app.store.engine.connect() as connection:
        stored = connection.execute(sql("SELECT language FROM turns WHERE role = 'user'")).all()
    assert [tuple(row) for row in stored] == [(note.language,)]
    # The buttons are emoji; the words they lead to are in the person's language.
    assert thanked == [translate("Thanks for the {emoji}!", note.language).format(emoji="👍")]
    assert form.modal is not None and form.modal["title"] == translate(SUGGEST, note.language)
    assert note.language == "en" or form.modal["title"] != SUGGEST  # a catalog of its own, not English
    assert reply["content"].strip() == REPLIES[note.language]
    (attachment,) = spoken["attachments"]
    assert attachment["content_type"] == "audio/ogg" and uploaded(fake, attachment).startswith(b"OggS")
    assert said_in and {voice.split("-")[0] for voice in said_in} == {note.language}  # every sentence
