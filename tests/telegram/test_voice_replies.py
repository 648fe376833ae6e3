"""Spoken replies through the real PTB client: a voice note in mirror mode is answered with the text
reply (buttons and all) and then a voice note; text gets text only; /voice on|off per person."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from bots.app import App, build_speaker
from tests.conftest import make_settings, voice
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import FakeBotApi, SentAudio, private_chat, user
from tests.telegram.scenario import wait_for_reply, wait_for_text

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

ADA = user(1, "Ada")


def speak(app: App, tmp_path: Path, served_gguf: Path, mode: str) -> None:
    app.service.replies.speaker = build_speaker(
        make_settings(tmp_path, served_gguf, tts_replies=mode), app.store
    )


def opus_48k_mono_seconds(data: bytes) -> float:
    import av

    with av.open(io.BytesIO(data)) as container:
        (stream,) = container.streams.audio
        assert container.format.name == "ogg" and stream.codec_context.name == "opus"
        assert stream.rate == 48_000 and stream.channels == 1
        assert container.duration is not None
        return container.duration / 1_000_000


async def test_a_voice_note_in_mirror_mode_gets_the_text_reply_and_a_voice_note(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    speak(app, tmp_path, served_gguf, "mirror")
    await start_bot()
    asked = fake_api.send_voice(private_chat(ADA), ADA, voice("capital_of_france.ogg"))
    reply = await wait_for_reply(fake_api, ADA["id"])
    (note,) = await fake_api.wait_for(lambda: fake_api.audio)
    assert isinstance(note, SentAudio)

    assert [label for label, _ in reply.buttons][:2] == ["👍", "👎"]  # rating stays on the text
    assert note.method == "sendVoice" and note.reply_to == asked["message_id"]
    seconds = opus_48k_mono_seconds(note.data)
    assert note.duration is not None and note.duration >= 1 and abs(note.duration - seconds) <= 1
    assert note.message_id > reply.message_id  # after the text
    ((spoken_seconds, speak_ms),) = query(
        app, "SELECT spoken_seconds, speak_ms FROM turns WHERE role = 'assistant'"
    )
    assert spoken_seconds == pytest.approx(seconds, abs=0.1) and speak_ms > 0


async def test_text_gets_no_voice_in_mirror_mode_until_the_person_says_voice_on(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    speak(app, tmp_path, served_gguf, "mirror")
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    await wait_for_reply(fake_api, ADA["id"])
    await fake_api.settle(1.0)
    assert fake_api.audio == []

    fake_api.send_text(private_chat(ADA), ADA, "/voice on")
    await wait_for_text(fake_api, ADA["id"], "voice note")
    fake_api.send_text(private_chat(ADA), ADA, "Hello there!")
    await wait_for_reply(fake_api, ADA["id"], count=2)
    await fake_api.wait_for(lambda: fake_api.audio)

    fake_api.send_text(private_chat(ADA), ADA, "/voice off")
    await wait_for_text(fake_api, ADA["id"], "text only")
    assert query(app, "SELECT reply_voice FROM people") == [(0,)]


async def test_someone_who_refuses_voice_notes_gets_an_audio_file(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    speak(app, tmp_path, served_gguf, "mirror")
    fake_api.fail("sendVoice", status=400, description="Bad Request: VOICE_MESSAGES_FORBIDDEN")
    await start_bot()
    fake_api.send_voice(private_chat(ADA), ADA, voice("capital_of_france.ogg"))
    await wait_for_reply(fake_api, ADA["id"])
    (note,) = await fake_api.wait_for(lambda: fake_api.audio)
    assert note.method == "sendAudio"
    opus_48k_mono_seconds(note.data)


async def test_a_failing_synthesizer_leaves_the_rated_reply_and_adds_a_short_note(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    from tests.test_speech import BrokenSynthesizer

    speak(app, tmp_path, served_gguf, "mirror")
    assert app.service.speaker is not None
    app.service.speaker.synthesizer = BrokenSynthesizer()
    await start_bot()
    fake_api.send_voice(private_chat(ADA), ADA, voice("capital_of_france.ogg"))
    reply = await wait_for_reply(fake_api, ADA["id"])
    note = await wait_for_text(fake_api, ADA["id"], "could not say this one aloud")
    assert note.message_id > reply.message_id and fake_api.audio == []
    assert [label for label, _ in reply.buttons][:2] == ["👍", "👎"]
    assert "Traceback" not in note.text and len(note.text) < 100
    (stored,) = query(app, "SELECT text FROM turns WHERE role = 'assistant'")
    assert stored[0] == reply.text
