"""Nothing received is lost on Discord: what a stopped process stored and did not answer is answered.

Discord never sends a message again to a new session. A process that stored a person's turn and
then stopped (killed, crashed, redeployed) is stood in for by storing the turn through the store
exactly as the service does on receiving the message, while no client is connected; the next
client that starts answers it under the person's message, once, across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bots.app import App, build_app
from bots.discord_bot.client import CHANNEL_GONE, MESSAGE_GONE, IrisClient
from core.domain import ChatRef, Person
from core.generation import LlamaGenerator
from core.replies import LOST_IN_RESTART
from core.service import ChatService
from core.transcription import WhisperTranscriber
from storage.repository import SqlStore
from tests.conftest import _postgres_database, voice
from tests.discord.conftest import (
    discord_settings,
    finished_reply,
    first_answer,
    running,
    stored_turns,
)
from tests.discord.fake_discord import FakeDiscord, Json


def store_as_if_stopped(store: SqlStore, message: Json, text: str | None = None) -> int:
    """Store a person's turn as the service does on receiving ``message``; nobody answers it."""
    author = message["author"]
    voice_note = text is None
    receipt = store.record_user_turn(
        ChatRef("discord", message["channel_id"]),
        Person("discord", author["id"], author["global_name"]),
        text=text,
        from_voice=voice_note,
        message_id=message["id"],
        shared_history=False,
    )
    return receipt.turn_id


def backdate(app: App, turn_id: int, minutes: float) -> None:
    from sqlalchemy import update

    from storage.tables import TurnRow

    with app.store._session() as session:
        moment = datetime.now(UTC) - timedelta(minutes=minutes)
        session.execute(update(TurnRow).where(TurnRow.id == turn_id).values(created_at=moment))


async def recovered(client: IrisClient) -> None:
    """Wait until the client has gone through every turn it found at start."""
    recovery = await asyncio.wait_for(_started(client), 30)
    await asyncio.wait_for(asyncio.shield(recovery), 120)


async def _started(client: IrisClient) -> asyncio.Task[None]:
    while client.recovery is None:
        await asyncio.sleep(0.05)
    return client.recovery


def answers(app: App) -> dict[int, int]:
    """How many replies are stored for each turn (by the turn they answer)."""
    from sqlalchemy import func, select

    from storage.tables import TurnRow

    with app.store._session() as session:
        rows = session.execute(
            select(TurnRow.reply_to_id, func.count())
            .where(TurnRow.reply_to_id.is_not(None))
            .group_by(TurnRow.reply_to_id)
        ).all()
    return {turn: count for turn, count in rows}


def finished(fake: FakeDiscord, message: Json) -> list[Json]:
    """The bot's finished replies (those with the rating buttons) under a message."""
    return [m for m in fake.replies_to(int(message["id"])) if m["components"]]


async def test_messages_stored_before_a_stop_are_answered_under_them_once(
    fake: FakeDiscord, app: App, service: ChatService, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    asked = await fake.post(person, "What is the capital of France?", mention_bot=True)
    in_dm = await fake.post(person, "What is the capital of Italy?", dm=True)
    turns = [
        store_as_if_stopped(app.store, asked, "What is the capital of France?"),
        store_as_if_stopped(app.store, in_dm, "What is the capital of Italy?"),
    ]

    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake) as client:
        for message in (asked, in_dm):
            reply = await finished_reply(fake, message, timeout=120)
            assert reply["content"].strip()
            assert reply["message_reference"]["message_id"] == message["id"]  # under their message
        await recovered(client)

    assert [len(finished(fake, m)) for m in (asked, in_dm)] == [1, 1]
    assert answers(app) == {turns[0]: 1, turns[1]: 1}
    assert all(t.error is None for t in stored_turns(app))

    # The next start finds nothing left to answer.
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake) as client:
        await recovered(client)
    assert [len(finished(fake, m)) for m in (asked, in_dm)] == [1, 1]
    assert answers(app) == {turns[0]: 1, turns[1]: 1}


async def test_old_failed_and_vanished_messages_are_not_answered(
    fake: FakeDiscord, app: App, service: ChatService, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    old = await fake.post(person, "Are you there?", mention_bot=True)
    failed = await fake.post(person, "Hello again", mention_bot=True)
    deleted = await fake.post(person, "Never mind", mention_bot=True)
    elsewhere = await fake.post(person, "In a channel since deleted", mention_bot=True)
    elsewhere = {**elsewhere, "channel_id": str(fake.new_id())}  # a channel Discord no longer knows
    old_turn = store_as_if_stopped(app.store, old, "Are you there?")
    backdate(app, old_turn, minutes=30)  # older than IRIS_CHAT_RECOVER_MINUTES (10)
    failed_turn = store_as_if_stopped(app.store, failed, "Hello again")
    app.store.mark_failed(failed_turn, "Sorry, something went wrong.")
    deleted_turn = store_as_if_stopped(app.store, deleted, "Never mind")
    fake.deleted.add(int(deleted["id"]))
    gone_turn = store_as_if_stopped(app.store, elsewhere, "In a channel since deleted")

    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake) as client:
        await recovered(client)

    assert fake.bot_messages() == []  # nobody was answered or told anything
    assert answers(app) == {}
    errors = {t.id: t.error for t in stored_turns(app)}
    assert errors == {
        old_turn: None,  # left as it was: too old to answer
        failed_turn: "Sorry, something went wrong.",
        deleted_turn: MESSAGE_GONE,
        gone_turn: CHANNEL_GONE,
    }


async def test_a_voice_note_is_downloaded_again_or_asked_for_again(
    fake: FakeDiscord, app: App, service: ChatService, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    audio = fake.attachment(voice("capital_of_france.ogg"), duration=2.4)
    spoken = await fake.post(person, attachments=[audio])
    lost_audio = fake.attachment(voice("greeting.ogg"), duration=2.0)
    lost = await fake.post(person, attachments=[lost_audio])
    spoken_turn = store_as_if_stopped(app.store, spoken)
    lost_turn = store_as_if_stopped(app.store, lost)
    del fake.files[lost_audio["url"].split("?")[0].removeprefix(fake.origin)]  # gone from the CDN since

    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake) as client:
        reply = await finished_reply(fake, spoken, timeout=120)
        told = await first_answer(fake, lost)
        await recovered(client)

    assert reply["content"].strip()
    heard = fake.replies_to(int(spoken["id"]))[0]["content"]
    assert heard.startswith("🎤") and "capital of france" in heard.lower()  # the transcript, shown first
    assert told["content"] == LOST_IN_RESTART and not told["components"]
    stored = {t.id: t for t in stored_turns(app)}
    assert stored[spoken_turn].error is None and "capital of france" in (stored[spoken_turn].text or "").lower()
    assert stored[lost_turn].error == LOST_IN_RESTART
    assert answers(app) == {spoken_turn: 1}


async def test_recovery_off_answers_nothing(
    fake: FakeDiscord, app: App, service: ChatService, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    asked = await fake.post(person, "What is the capital of France?", mention_bot=True)
    turn = store_as_if_stopped(app.store, asked, "What is the capital of France?")
    settings = discord_settings(tmp_path, served_gguf, fake, chat_recover_minutes=0)
    service.replies.config = replace(service.replies.config, chat=settings.chat)

    async with running(service, settings, fake) as client:
        await recovered(client)

    assert fake.bot_messages() == []
    assert [t.error for t in stored_turns(app) if t.id == turn] == [None]


# --- several processes on one PostgreSQL -------------------------------------------------


@pytest.mark.postgres
async def test_two_processes_starting_at_once_answer_a_turn_once(
    fake: FakeDiscord,
    tmp_path: Path,
    served_gguf: Path,
    generator: LlamaGenerator,
    transcriber: WhisperTranscriber,
) -> None:
    person = fake.add_user("ada")
    asked = await fake.post(person, "What is the capital of France?", mention_bot=True)
    with (
        contextlib.contextmanager(_postgres_database)() as database,
        two_apps(tmp_path, served_gguf, fake, database, generator, transcriber) as (first, second),
    ):
        turn = store_as_if_stopped(first.store, asked, "What is the capital of France?")
        settings = [discord_settings(tmp_path / name, served_gguf, fake) for name in ("a", "b")]
        async with contextlib.AsyncExitStack() as stack:
            one, other = await asyncio.gather(  # both start at once, as a redeploy starts them
                stack.enter_async_context(running(first.service, settings[0], fake)),
                stack.enter_async_context(running(second.service, settings[1], fake)),
            )
            await finished_reply(fake, asked, timeout=120)
            await recovered(one)
            await recovered(other)
        assert len(finished(fake, asked)) == 1
        assert answers(first) == {turn: 1}


@contextlib.contextmanager
def two_apps(
    tmp_path: Path,
    served_gguf: Path,
    fake: FakeDiscord,
    database: str,
    generator: LlamaGenerator,
    transcriber: WhisperTranscriber,
) -> Iterator[tuple[App, App]]:
    """Two applications (two stores, two services) on one database, as two processes have."""
    apps = []
    try:
        for name in ("a", "b"):
            app = build_app(discord_settings(tmp_path / name, served_gguf, fake, database_url=database))
            app.service.writer.generator = generator
            app.service.listener.transcriber = transcriber
            apps.append(app)
        yield apps[0], apps[1]
    finally:
        for app in apps:
            app.close()


def test_of_many_claims_at_once_exactly_one_wins(store: SqlStore) -> None:
    turn = store.record_user_turn(
        ChatRef("discord", "1"),
        Person("discord", "2", "Ada"),
        text="hello",
        from_voice=False,
        message_id="3",
        shared_history=False,
    ).turn_id
    barrier = threading.Barrier(8)
    won: list[bool] = []

    def claim() -> None:
        barrier.wait()
        won.append(store.claim_unanswered(turn, "A restart interrupted this message before it was answered."))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]
    turn_row = store.get_turn(turn)
    assert turn_row is not None and turn_row.error is not None
    assert store.unanswered_turns("discord", datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC)) == []
