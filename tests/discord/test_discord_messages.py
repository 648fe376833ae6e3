"""Messages in, answers out: the real discord.py client against the fake Discord, real models, SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from bots.app import App
from core.access import REFUSAL
from core.domain import ChatMessage
from core.ports import Generation
from core.service import ChatService
from tests.conftest import voice
from tests.discord.conftest import (
    discord_settings,
    finished_reply,
    first_answer,
    running,
    stored_turns,
    turn_of,
)
from tests.discord.fake_discord import FakeDiscord, custom_ids
from tests.fakes import ScriptedGenerator


async def test_a_voice_message_gets_its_transcript_a_streamed_reply_and_buttons(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        audio = fake.attachment(voice("capital_of_france.ogg"), duration=2.4)
        sent = await fake.post(person, attachments=[audio], dm=True)
        reply = await finished_reply(fake, sent)

    transcript, answer = fake.replies_to(int(sent["id"]))
    assert "capital of france" in transcript["content"].lower()
    assert transcript["content"].startswith("🎤")
    assert answer is reply and reply["content"].strip()
    # Streamed: the reply was posted with its first words and grew by edits to the stored text.
    revisions = fake.revisions[int(reply["id"])]
    assert len(revisions) >= 2 and len(revisions[0]) < len(revisions[-1])
    assert all(reply["content"].startswith(text.strip()) for text in revisions)
    turn_id = turn_of(reply)
    assert custom_ids(reply) == [
        f"iris:rate:up:{turn_id}",
        f"iris:rate:down:{turn_id}",
        f"iris:again:{turn_id}",
        f"iris:fix:{turn_id}",
    ]
    stored_reply = app.store.get_turn(turn_id)
    assert stored_reply is not None and stored_reply.text == reply["content"]
    asked = [t for t in stored_turns(app) if t.role == "user"]
    assert len(asked) == 1 and asked[0].from_voice and asked[0].message_id == sent["id"]
    assert "capital of france" in (asked[0].text or "").lower()
    # The attachment was fetched once, from its URL with the query string.
    assert len(fake.downloads) == 1 and fake.downloads[0].endswith("voice-message.ogg")


async def test_in_a_server_it_answers_mentions_and_replies_and_ignores_the_rest(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        chatter = await fake.post(person, "What is the capital of France?")
        asked = await fake.post(person, "What is the capital of France?", mention_bot=True)
        first = await finished_reply(fake, asked)
        follow_up = await fake.post(person, "And of Germany?", reply_to=int(first["id"]))
        await finished_reply(fake, follow_up)

    assert fake.replies_to(int(chatter["id"])) == []
    texts = [t.text for t in stored_turns(app) if t.role == "user"]
    # The mention is not part of what the model reads.
    assert texts == ["What is the capital of France?", "And of Germany?"]
    # One conversation per person per channel by default.
    assert len({t.conversation_id for t in stored_turns(app)}) == 1


async def test_a_stranger_is_refused_and_nothing_is_stored(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    friend = fake.add_user("friend", roles=[fake.member_role_id])
    stranger = fake.add_user("stranger")
    settings = discord_settings(
        tmp_path, served_gguf, fake, allowed_user_ids=["1"], allowed_role_ids=[str(fake.member_role_id)]
    )
    async with running(service, settings, fake):
        refused = await fake.post(stranger, "Hello, who are you?", mention_bot=True)
        refusal = await first_answer(fake, refused)
        refused_dm = await fake.post(stranger, "Hello?", dm=True)
        refusal_dm = await first_answer(fake, refused_dm)
        admitted = await fake.post(friend, "Hello, who are you?", mention_bot=True)
        await finished_reply(fake, admitted)

    assert refusal["content"] == REFUSAL and refusal_dm["content"] == REFUSAL
    assert not refusal["components"]
    assert [t.message_id for t in stored_turns(app) if t.role == "user"] == [admitted["id"]]
    assert app.store.stats().people == 1


async def test_a_thread_belongs_to_its_allowed_channel_and_other_channels_are_refused(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    settings = discord_settings(tmp_path, served_gguf, fake, allowed_chat_ids=[str(fake.channel_id)])
    async with running(service, settings, fake):
        elsewhere = await fake.post(person, "Hi there", channel_id=fake.other_channel_id, mention_bot=True)
        refusal = await first_answer(fake, elsewhere)
        in_thread = await fake.post(person, "Hi there", channel_id=fake.thread_id, mention_bot=True)
        await finished_reply(fake, in_thread)

    assert refusal["content"] == REFUSAL
    [asked] = [t for t in stored_turns(app) if t.role == "user"]
    assert asked.message_id == in_thread["id"] and asked.thread_id == str(fake.thread_id)


async def test_oversized_and_overlong_audio_is_refused_before_download_with_the_limit(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    settings = discord_settings(tmp_path, served_gguf, fake, chat_max_file_mb=1, chat_max_audio_seconds=60)
    data = voice("greeting.ogg")
    async with running(service, settings, fake):
        big = fake.attachment(data, filename="talk.mp3", content_type="audio/mpeg", voice=False, size=5_000_000)
        too_big = await fake.post(person, attachments=[big], dm=True)
        size_refusal = await first_answer(fake, too_big)
        long = fake.attachment(data, duration=75.0)
        too_long = await fake.post(person, attachments=[long], dm=True)
        length_refusal = await first_answer(fake, too_long)
        image = fake.attachment(b"\x89PNG...", filename="cat.png", content_type="image/png", voice=False)
        picture = await fake.post(person, attachments=[image], dm=True)
        picture_refusal = await first_answer(fake, picture)

    assert size_refusal["content"] == "That file is too large: the limit is 1 MB."
    assert length_refusal["content"] == "That voice message is 75 s long; I can take up to 60 s."
    assert "voice messages, audio files and text" in picture_refusal["content"]
    assert fake.downloads == []
    assert stored_turns(app) == []


async def test_an_audio_file_without_voice_flag_is_transcribed_by_its_content_type(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        audio = fake.attachment(
            voice("greeting.m4a"), filename="note.m4a", content_type="audio/mp4", voice=False
        )
        sent = await fake.post(person, "<- listen", attachments=[audio], dm=True)
        await finished_reply(fake, sent)

    transcript = fake.replies_to(int(sent["id"]))[0]["content"]
    assert "good morning" in transcript.lower()


async def test_a_message_delivered_twice_is_answered_once(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "What is the capital of France?", dm=True)
        await fake.deliver(sent)  # at once, while the first delivery is being answered
        await finished_reply(fake, sent)
        await fake.deliver(sent)  # and again later, as after a gateway replay
        later = await fake.post(person, "Thanks!", dm=True)
        await finished_reply(fake, later)

    assert len(fake.replies_to(int(sent["id"]))) == 1
    assert [t.message_id for t in stored_turns(app) if t.role == "user"] == [sent["id"], later["id"]]


async def test_a_message_with_a_forged_lone_surrogate_or_nul_is_answered_and_stored(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    """``"\\ud800"`` in the gateway's JSON becomes a lone surrogate, which no database stores as it is;
    PostgreSQL refuses a NUL (``"\\u0000"``)."""
    person = fake.add_user("ada\udcff")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "What is the capital\0 of \ud800France?", dm=True)
        reply = await finished_reply(fake, sent)

    assert reply["content"].strip() and "Sorry" not in reply["content"]
    question, answer = stored_turns(app)
    assert (question.role, question.text) == ("user", "What is the capital\ufffd of \ufffdFrance?")
    assert answer.role == "assistant" and answer.text == reply["content"]


async def test_a_long_reply_continues_in_further_messages_under_2000_characters(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    paragraphs = [" ".join(f"Sentence {p}.{s} says something useful." for s in range(30)) for p in range(5)]
    long_reply = "\n\n".join(paragraphs)
    assert len(long_reply) > 4000
    service.writer.generator = ScriptedGenerator(long_reply, pieces=40, pause_s=0.05)
    person = fake.add_user("ada")
    settings = discord_settings(tmp_path, served_gguf, fake, discord_edit_interval_seconds=0.3)
    async with running(service, settings, fake):
        sent = await fake.post(person, "Tell me everything.", dm=True)
        last = await finished_reply(fake, sent)

    pieces = fake.replies_to(int(sent["id"]))
    assert len(pieces) >= 3 and pieces[-1] is last
    assert all(len(p["content"]) <= 2000 for p in pieces)
    assert " ".join(p["content"] for p in pieces).split() == long_reply.split()
    assert all(p["content"].endswith(".") for p in pieces)  # cut at sentence ends
    assert [bool(p["components"]) for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert app.store.get_turn(turn_of(last)).text == long_reply  # type: ignore[union-attr]


async def test_a_429_on_an_edit_is_waited_out(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    edits = r"/api/v10/channels/\d+/messages/\d+"
    fake.throttle("PATCH", edits, times=1, retry_after=0.6)
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "What is the capital of France?", dm=True)
        reply = await finished_reply(fake, sent)

    patches = fake.requests_to("PATCH", edits)
    assert [p.status for p in patches][:2] == [429, 200]
    assert patches[1].at - patches[0].at >= 0.6 * 0.9  # retried only after retry_after
    assert app.store.get_turn(turn_of(reply)).text == reply["content"]  # type: ignore[union-attr]


async def test_after_a_gateway_disconnect_it_resumes_and_gets_what_was_missed(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        await fake.drop_connection(code=4000)
        sent = await fake.post(person, "What is the capital of France?", dm=True)  # while disconnected
        await finished_reply(fake, sent)

    assert len(fake.identifies) == 1  # no new session
    assert len(fake.resumes) == 1 and fake.resumes[0]["session_id"] == fake.session_id
    assert [t.message_id for t in stored_turns(app) if t.role == "user"] == [sent["id"]]


async def test_in_reply_chain_mode_each_chain_is_a_conversation_even_after_a_restart(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    settings = discord_settings(tmp_path, served_gguf, fake, discord_conversation="reply_chain")
    async with running(service, settings, fake):
        root = await fake.post(person, "What is the capital of France?", mention_bot=True)
        first = await finished_reply(fake, root)
        second_q = await fake.post(person, "And of Germany?", reply_to=int(first["id"]))
        second = await finished_reply(fake, second_q)
        other = await fake.post(person, "What is two plus two?", mention_bot=True)
        await finished_reply(fake, other)
    async with running(service, settings, fake):  # a fresh client knows no chain: it walks back
        third_q = await fake.post(person, "And of Italy?", reply_to=int(second["id"]))
        await finished_reply(fake, third_q)

    conversation = {
        t.message_id: (t.conversation_id, t.thread_id) for t in stored_turns(app) if t.role == "user"
    }
    assert conversation[root["id"]] == conversation[second_q["id"]] == conversation[third_q["id"]]
    assert conversation[root["id"]][1] == root["id"]
    assert conversation[other["id"]][0] != conversation[root["id"]][0]
    assert fake.requests_to("GET", r"/api/v10/channels/\d+/messages/\d+"), "the chain was walked by fetching"


async def test_voice_reply_mode_answers_voice_messages_without_a_mention(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    settings = discord_settings(
        tmp_path, served_gguf, fake, discord_reply_mode="voice", allowed_chat_ids=[str(fake.channel_id)]
    )
    async with running(service, settings, fake):
        text = await fake.post(person, "just chatting with friends")
        spoken = await fake.post(person, attachments=[fake.attachment(voice("greeting.ogg"))])
        await finished_reply(fake, spoken)

    assert fake.replies_to(int(text["id"])) == []
    assert [t.message_id for t in stored_turns(app) if t.role == "user"] == [spoken["id"]]


class BreakingGenerator(ScriptedGenerator):
    """Streams the start of a reply, then fails as a crashed model would."""

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        yield "The capital of"
        await asyncio.sleep(0.3)
        raise RuntimeError("llama.cpp went away")


async def test_silence_and_a_failing_model_get_a_notice_and_nothing_rateable(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        quiet = await fake.post(
            person, attachments=[fake.attachment(voice("silence.ogg"), duration=3.0)], dm=True
        )
        heard_nothing = await first_answer(fake, quiet)
        service.writer.generator = BreakingGenerator("unused")
        asked = await fake.post(person, "What is the capital of France?", dm=True)
        broken = await first_answer(fake, asked)
        sorry = "Sorry, I could not come up with a reply just now. Please try again."
        await fake.wait_for(lambda: broken["content"] == sorry, 30, "the notice in place of the partial reply")

    assert heard_nothing["content"] == "I didn't hear any speech in that recording."
    assert fake.revisions[int(broken["id"])][0] == "The capital of"  # it had started streaming
    assert broken["components"] == [] and len(fake.replies_to(int(asked["id"]))) == 1
    asked_turns = [t for t in stored_turns(app) if t.role == "user"]
    assert [t.message_id for t in asked_turns] == [quiet["id"], asked["id"]]
    assert all(t.error for t in asked_turns) and not [t for t in stored_turns(app) if t.role == "assistant"]
