"""Spoken replies through the real discord.py client: a real voice message (flag, one OGG/Opus
attachment with its duration and waveform, no text), and an audio file where Discord refuses one."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import pytest

from bots.app import App, build_speaker
from core.service import ChatService
from tests.conftest import make_settings, voice
from tests.discord.conftest import discord_settings, finished_reply, running, shown
from tests.discord.fake_discord import VOICE_MESSAGE, FakeDiscord, Json

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def speak(app: App, tmp_path: Path, served_gguf: Path) -> None:
    app.service.replies.speaker = build_speaker(
        make_settings(tmp_path, served_gguf, tts_replies="mirror"), app.store
    )


def audio_replies(fake: FakeDiscord, source: Json) -> list[Json]:
    return [m for m in fake.replies_to(int(source["id"])) if m["attachments"]]


def opus_seconds(data: bytes) -> float:
    import av

    with av.open(io.BytesIO(data)) as container:
        (stream,) = container.streams.audio
        assert container.format.name == "ogg" and stream.codec_context.name == "opus"
        assert stream.rate == 48_000 and stream.channels == 1
        assert container.duration is not None
        return container.duration / 1_000_000


def uploaded(fake: FakeDiscord, attachment: Json) -> bytes:
    return fake.files[attachment["url"].split("?")[0].removeprefix(fake.origin)]


async def test_a_voice_message_is_answered_with_a_voice_message(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    speak(app, tmp_path, served_gguf)
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, attachments=[fake.attachment(voice("capital_of_france.ogg"))], dm=True)
        reply = await finished_reply(fake, sent)
        (spoken,) = await fake.wait_for(lambda: audio_replies(fake, sent), 60, "a voice message")

    assert reply["content"].strip() and reply["components"]  # the text reply keeps its buttons
    assert spoken["flags"] & VOICE_MESSAGE and spoken["content"] == ""
    (attachment,) = spoken["attachments"]
    assert attachment["content_type"] == "audio/ogg"
    waveform = base64.b64decode(attachment["waveform"])
    assert 0 < len(waveform) <= 256
    seconds = opus_seconds(uploaded(fake, attachment))
    assert attachment["duration_secs"] == pytest.approx(seconds, abs=0.1)


async def test_where_discord_refuses_voice_messages_an_audio_file_is_sent(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    speak(app, tmp_path, served_gguf)
    fake.refuse_voice_messages = True
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, attachments=[fake.attachment(voice("capital_of_france.ogg"))], dm=True)
        await finished_reply(fake, sent)
        (audio,) = await fake.wait_for(lambda: audio_replies(fake, sent), 60, "an audio file")

    assert not audio["flags"] & VOICE_MESSAGE
    (attachment,) = audio["attachments"]
    assert attachment["filename"].endswith(".ogg") and "waveform" not in attachment
    opus_seconds(uploaded(fake, attachment))
    assert len(fake.requests_to("POST", r".*/channels/\d+/messages")) >= 3  # the refused try included


async def test_a_text_message_gets_no_voice_in_mirror_mode_until_voice_on(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    speak(app, tmp_path, served_gguf)
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "What is the capital of France?", dm=True)
        await finished_reply(fake, sent)
        assert audio_replies(fake, sent) == []

        [said] = await shown(fake, await fake.command("voice", person, options={"answer": "on"}))
        assert "voice note" in said
        again = await fake.post(person, "Hello there!", dm=True)
        await finished_reply(fake, again)
        (spoken,) = await fake.wait_for(lambda: audio_replies(fake, again), 60, "a voice message")
    assert spoken["flags"] & VOICE_MESSAGE
