"""Voice notes, audio files and text in, transcript and streamed reply out, through the real PTB client."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bots.app import App
from core.access import REFUSAL
from tests.conftest import FIXTURES, voice
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import BOT_USERNAME, FakeBotApi, group_chat, private_chat, user
from tests.telegram.scenario import rated_replies, turn_of, wait_for_reply, wait_for_text

ADA = user(1, "Ada")


async def test_voice_note_gets_quoted_transcript_then_streamed_reply_with_buttons(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.send_voice(private_chat(ADA), ADA, voice("capital_of_france.ogg"))
    reply = await wait_for_reply(fake_api, ADA["id"])

    transcript, shown_reply = fake_api.chat(ADA["id"])
    assert transcript.html is not None and transcript.html.startswith("<blockquote>")
    assert "capital of france" in transcript.text.lower()
    assert shown_reply is reply
    # It grew in place: first sent with the first words, then edited, never with the same text twice.
    assert (
        len(reply.texts) >= 2
        and reply.texts[-1].startswith(reply.texts[0])
        and reply.texts[0] != reply.texts[-1]
    )
    assert all(earlier != later for earlier, later in zip(reply.texts, reply.texts[1:], strict=False))
    assert all(call.status == 200 for call in fake_api.calls_to("editMessageText"))
    # The typing indicator showed before the first message went out.
    methods = [call.method for call in fake_api.calls]
    assert methods.index("sendChatAction") < methods.index("sendMessage")

    (stored_reply,) = query(app, "SELECT id, text, reply_to_id FROM turns WHERE role = 'assistant'")
    assert turn_of(reply) == stored_reply[0]
    assert reply.text == stored_reply[1]
    assert [label for label, _ in reply.buttons] == ["👍", "👎", "🔁", "✏️ Suggest a better answer"]
    (heard,) = query(
        app, "SELECT text, from_voice, platform_message_id FROM turns WHERE id = ?", stored_reply[2]
    )
    assert "capital of France" in heard[0] and heard[1] == 1


async def test_text_message_is_answered_without_a_transcript(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    reply = await wait_for_reply(fake_api, ADA["id"])
    assert [sent.text[:1] for sent in fake_api.chat(ADA["id"])] == [reply.text[:1]]  # no 🎤 message
    assert query(app, "SELECT text FROM turns WHERE role = 'user'") == [("What is the capital of France?",)]
    assert query(app, "SELECT text FROM turns WHERE role = 'assistant'") == [(reply.text,)]


async def test_a_message_with_a_forged_lone_surrogate_or_nul_is_answered_and_stored(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    """``"\\ud800"`` in an update's JSON becomes a lone surrogate, which no database stores as it is;
    PostgreSQL refuses a NUL (``"\\u0000"``)."""
    await start_bot()
    forger = user(7, "Eve\udcff")
    fake_api.send_text(private_chat(forger), forger, "What is the capital\0 of \ud800France?")
    reply = await wait_for_reply(fake_api, forger["id"])
    assert reply.text.strip() and "Sorry" not in reply.text
    assert query(app, "SELECT text FROM turns WHERE role = 'user'") == [
        ("What is the capital\ufffd of \ufffdFrance?",)
    ]
    assert query(app, "SELECT text FROM turns WHERE role = 'assistant'") == [(reply.text,)]
    assert query(app, "SELECT display_name FROM people WHERE user_id = '7'") == [("Eve\ufffd",)]


@pytest.mark.parametrize(
    ("kind", "fixture", "mime"),
    [("audio", "greeting.mp3", "audio/mpeg"), ("document", "greeting.wav", "audio/x-wav")],
)
async def test_audio_files_are_transcribed(
    start_bot: StartBot, fake_api: FakeBotApi, kind: str, fixture: str, mime: str
) -> None:
    await start_bot()
    fake_api.send_voice(private_chat(ADA), ADA, voice(fixture), kind=kind, mime_type=mime)
    await wait_for_reply(fake_api, ADA["id"])
    assert "good morning" in fake_api.chat(ADA["id"])[0].text.lower()


async def test_video_note_is_transcribed(start_bot: StartBot, fake_api: FakeBotApi, tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to make a video note")
    video = tmp_path / "note.mp4"
    picture = ["-f", "lavfi", "-i", "color=c=navy:s=240x240:d=3"]
    sound = ["-i", str(FIXTURES / "greeting.m4a")]
    encode = ["-shortest", "-c:v", "libx264", "-c:a", "aac", str(video)]
    subprocess.run(["ffmpeg", "-loglevel", "error", *picture, *sound, *encode], check=True)
    await start_bot()
    fake_api.send_voice(private_chat(ADA), ADA, video.read_bytes(), kind="video_note")
    await wait_for_reply(fake_api, ADA["id"])
    assert "good morning" in fake_api.chat(ADA["id"])[0].text.lower()


async def test_an_update_delivered_twice_is_answered_once(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    message = fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    fake_api.deliver({"message": message})  # Telegram's redelivery: same message, new update id
    await wait_for_reply(fake_api, ADA["id"])
    await fake_api.settle()
    assert len(fake_api.chat(ADA["id"])) == 1
    assert query(app, "SELECT count(*) FROM turns") == [(2,)]


async def test_a_stranger_is_refused_and_nothing_is_stored(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot(allowed_user_ids=["1"])
    stranger = user(2, "Eve")
    fake_api.send_voice(private_chat(stranger), stranger, voice("capital_of_france.ogg"))
    await wait_for_text(fake_api, stranger["id"], REFUSAL)
    fake_api.send_text(private_chat(stranger), stranger, "/start")
    await fake_api.wait_for(lambda: len(fake_api.chat(stranger["id"])) == 2)
    await fake_api.settle()
    assert [sent.text for sent in fake_api.chat(stranger["id"])] == [REFUSAL, REFUSAL]
    assert fake_api.calls_to("getFile") == []
    assert query(app, "SELECT count(*) FROM people") == [(0,)]
    assert query(app, "SELECT count(*) FROM turns") == [(0,)]


async def test_files_over_the_limits_are_refused_before_download(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    chat = private_chat(ADA)
    fake_api.send_voice(chat, ADA, voice("capital_of_france.ogg"), file_size=25 * 1024 * 1024)
    too_big = await wait_for_text(fake_api, ADA["id"], "MB")
    assert too_big.text == "That voice note is 25.0 MB; I can take files up to 20 MB."
    fake_api.send_voice(chat, ADA, voice("capital_of_france.ogg"), duration=400)
    too_long = await wait_for_text(fake_api, ADA["id"], " s long")
    assert too_long.text == "That voice note is 400 s long; I can take up to 300 s."
    await fake_api.settle()
    assert fake_api.calls_to("getFile") == [] and fake_api.downloads == []
    assert query(app, "SELECT count(*) FROM turns") == [(0,)]


async def test_in_a_group_the_bot_answers_mentions_and_replies_only(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    group, bob = group_chat(), user(2, "Bob")
    chat_id = group["id"]
    fake_api.send_text(group, ADA, "Lunch at noon, everyone?")
    fake_api.send_voice(group, bob, voice("greeting.ogg"))
    asked = fake_api.send_text(group, ADA, f"@{BOT_USERNAME} What is the capital of France?")
    first = await wait_for_reply(fake_api, chat_id)
    assert first.reply_to == asked["message_id"]
    assert query(app, "SELECT text FROM turns WHERE role = 'user'") == [("What is the capital of France?",)]
    assert query(app, "SELECT text FROM turns WHERE role = 'assistant'") == [(first.text,)]

    fake_api.send_voice(group, bob, voice("greeting.ogg"), reply_to=first)
    await wait_for_reply(fake_api, chat_id, count=2)
    await fake_api.settle()
    assert len(rated_replies(fake_api, chat_id)) == 2
    # Each person keeps their own history in the group.
    owners = query(app, "SELECT count(DISTINCT owner_id) FROM conversations WHERE chat_id = ?", str(chat_id))
    assert owners == [(2,)]


async def test_a_group_can_have_every_voice_note_answered_and_share_one_history(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot(telegram_group_voice="all", shared_group_history=True)
    group, bob = group_chat(), user(2, "Bob")
    fake_api.send_voice(group, bob, voice("greeting.ogg"))
    await wait_for_reply(fake_api, group["id"])
    fake_api.send_voice(group, ADA, voice("capital_of_france.ogg"))
    await wait_for_reply(fake_api, group["id"], count=2)
    assert query(app, "SELECT count(*), max(owner_id) FROM conversations") == [(1, None)]
