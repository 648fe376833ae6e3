"""Six languages through the real python-telegram-bot client (issue #28, done-when): a voice note in
each language the bundled whisper ``base`` hears (espeak-ng voices, ``tests/fixtures/languages``),
sent by someone whose Telegram app speaks that language, is shown back as its words, stored with
its language, answered with buttons in that language, and the reply (a scripted one in that
language: the bundled 135M model writes English) is spoken in a voice of that language (espeak-ng's
voice for it, or the configured one where that one speaks it).
"""

from __future__ import annotations

import shutil

import pytest

from bench.languages import Note, word_accuracy
from bots.app import App
from core.i18n import translate
from core.transcription import WhisperTranscriber
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user
from tests.telegram.scenario import wait_for_reply
from tests.test_speech_languages import HEARD_WELL, REPLIES, answer_in

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SUGGEST = "✏️ Suggest a better answer"


@pytest.mark.parametrize("note", HEARD_WELL, ids=lambda note: note.name)
async def test_a_voice_note_is_heard_answered_and_spoken_in_its_language(
    start_bot: StartBot,
    fake_api: FakeBotApi,
    app: App,
    multilingual_transcriber: WhisperTranscriber,
    note: Note,
) -> None:
    said_in = answer_in(app, multilingual_transcriber, note.language)  # base, the default
    person = {**user(40, "Sam"), "language_code": note.language}
    await start_bot()

    fake_api.send_voice(private_chat(person), person, note.audio, duration=10)
    reply = await wait_for_reply(fake_api, person["id"])
    (spoken,) = await fake_api.wait_for(lambda: fake_api.audio)

    transcript = fake_api.chat(person["id"])[0]
    assert transcript.text.startswith("🎤")
    assert word_accuracy(note.text, transcript.text.removeprefix("🎤")) >= 0.8, transcript.text
    assert query(app, "SELECT language FROM turns WHERE role = 'user'") == [(note.language,)]
    labels = [label for label, _data in reply.buttons]
    assert translate(SUGGEST, note.language) in labels
    assert note.language == "en" or SUGGEST not in labels  # a catalog of its own, not English
    assert reply.text == REPLIES[note.language]
    assert spoken.method == "sendVoice" and spoken.data.startswith(b"OggS")
    assert said_in and {voice.split("-")[0] for voice in said_in} == {note.language}  # every sentence
    assert not any("Traceback" in sent.text for sent in fake_api.chat(person["id"]))
