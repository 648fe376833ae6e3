"""A ✏️ press is kept in the database: its answer lands after a restart and in another process.

Each scenario runs on SQLite and on PostgreSQL. A "process" is an ``App`` built from the
settings (its own service, engine and PTB application) on the shared database.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bots.app import App, build_app
from bots.telegram_bot import build_application, running
from bots.telegram_bot.conversation import CORRECTION_SAVED
from core.domain import ChatRef, Person
from core.feedback import CORRECTION_WAIT
from core.generation import LlamaGenerator
from core.transcription import WhisperTranscriber
from storage.pending import SqlPendingCorrections
from storage.repository import SqlStore
from tests.telegram.conftest import telegram_settings
from tests.telegram.fake_bot_api import FakeBotApi, Sent, private_chat, user
from tests.telegram.scenario import button, turn_of, wait_for_reply, wait_for_text

ADA = user(1, "Ada")
QUESTION = "What is the capital of France?"
BETTER = "Paris is the capital of France."
ASK_FIX = "what should I have said?"


class Processes:
    """Iris processes on one database, each built from the settings as ``iris run telegram`` is."""

    def __init__(
        self,
        url: str,
        tmp_path: Path,
        served_gguf: Path,
        api: FakeBotApi,
        shared: tuple[WhisperTranscriber, LlamaGenerator],
    ) -> None:
        self.settings = telegram_settings(tmp_path, served_gguf, api, database_url=url)
        self.shared = shared
        self.apps: list[App] = []

    def start(self) -> App:
        app = build_app(self.settings)
        # The models load once per test session; everything else is this process's own.
        app.service.listener.transcriber, app.service.writer.generator = self.shared
        self.apps.append(app)
        return app

    @contextlib.asynccontextmanager
    async def serving(self, app: App) -> AsyncIterator[None]:
        """The app answers Telegram (polling the fake) until the block ends."""
        async with running(build_application(app.service, self.settings), self.settings):
            yield

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.apps[0].store.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]

    def close(self) -> None:
        for app in self.apps:
            app.store.engine.dispose()


@pytest.fixture
def processes(
    database_url: str,
    tmp_path: Path,
    served_gguf: Path,
    fake_api: FakeBotApi,
    transcriber: WhisperTranscriber,
    generator: LlamaGenerator,
) -> Iterator[Processes]:
    shared = Processes(database_url, tmp_path, served_gguf, fake_api, (transcriber, generator))
    yield shared
    shared.close()


async def press_fix(api: FakeBotApi) -> tuple[Sent, Sent]:
    """Ask, get the reply, press ✏️ under it: the reply and the bot's request for the better answer."""
    api.send_text(private_chat(ADA), ADA, QUESTION)
    reply = await wait_for_reply(api, ADA["id"])
    api.press(ADA, reply, button(reply, "✏️"))
    return reply, await wait_for_text(api, ADA["id"], ASK_FIX)


async def test_a_correction_asked_for_before_a_restart_is_taken_after_it(
    processes: Processes, fake_api: FakeBotApi
) -> None:
    before = processes.start()
    async with processes.serving(before):
        reply, prompt = await press_fix(fake_api)
    before.store.engine.dispose()  # the process is gone; a new one starts on the same database

    async with processes.serving(processes.start()):
        fake_api.send_text(private_chat(ADA), ADA, BETTER, reply_to=prompt)
        await wait_for_text(fake_api, ADA["id"], CORRECTION_SAVED)

    stored = processes.rows("SELECT turn_id, text, status FROM corrections")
    assert stored == [(turn_of(reply), BETTER, "pending")]
    # Taken as the answer, not answered as a question.
    assert processes.rows("SELECT count(*) FROM turns WHERE role = 'user'") == [(1,)]
    assert processes.rows("SELECT count(*) FROM pending_corrections") == [(0,)]


async def test_a_correction_asked_for_in_one_process_is_taken_by_another(
    processes: Processes, fake_api: FakeBotApi
) -> None:
    first, second = processes.start(), processes.start()  # both alive, on one database
    async with processes.serving(first):
        reply, prompt = await press_fix(fake_api)
    async with processes.serving(second):
        fake_api.send_text(private_chat(ADA), ADA, BETTER, reply_to=prompt)
        await wait_for_text(fake_api, ADA["id"], CORRECTION_SAVED)
    # The first process, asked again, no longer waits for the answer the second one took.
    async with processes.serving(first):
        fake_api.send_text(private_chat(ADA), ADA, QUESTION)
        await wait_for_reply(fake_api, ADA["id"], count=2)

    assert processes.rows("SELECT turn_id, text FROM corrections") == [(turn_of(reply), BETTER)]
    assert processes.rows("SELECT count(*) FROM turns WHERE role = 'user'") == [(2,)]


async def test_a_correction_asked_for_too_long_ago_is_not_taken(
    processes: Processes, fake_api: FakeBotApi
) -> None:
    app = processes.start()
    async with processes.serving(app):
        _reply, prompt = await press_fix(fake_api)
        pressed_at = datetime.now(UTC) - CORRECTION_WAIT - timedelta(minutes=1)
        with app.store.engine.begin() as connection:  # as if ✏️ had been pressed a day ago
            connection.execute(text("UPDATE pending_corrections SET created_at = :at"), {"at": pressed_at})
        fake_api.send_text(private_chat(ADA), ADA, "What is the capital of Italy?", reply_to=prompt)
        await wait_for_reply(fake_api, ADA["id"], count=2)  # answered as a question

    assert processes.rows("SELECT count(*) FROM corrections") == [(0,)]
    assert processes.rows("SELECT count(*) FROM turns WHERE role = 'user'") == [(2,)]


async def test_reset_drops_the_awaited_correction(processes: Processes, fake_api: FakeBotApi) -> None:
    async with processes.serving(processes.start()):
        await press_fix(fake_api)
        fake_api.send_text(private_chat(ADA), ADA, "/reset")
        await wait_for_text(fake_api, ADA["id"], "New conversation")
        fake_api.send_text(private_chat(ADA), ADA, "What is the capital of Italy?")
        await wait_for_reply(fake_api, ADA["id"], count=2)

    assert processes.rows("SELECT count(*) FROM corrections") == [(0,)]
    assert processes.rows("SELECT count(*) FROM pending_corrections") == [(0,)]


def test_the_store_keeps_one_per_person_and_chat_until_dropped(store: SqlStore) -> None:
    pending = SqlPendingCorrections(store.engine)
    ada, bea = Person("telegram", "1"), Person("telegram", "2")
    here, there = ChatRef("telegram", "-100"), ChatRef("telegram", "1")
    long_ago = datetime.now(UTC) - timedelta(days=1)

    pending.expect(here, ada, 7, stale=long_ago)
    pending.expect(here, ada, 8, stale=long_ago)  # a second ✏️ replaces the first
    pending.expect(there, ada, 9, stale=long_ago)
    pending.expect(here, bea, 10, stale=long_ago)
    assert pending.awaited(here, ada, since=long_ago) == 8
    assert pending.awaited(here, ada, since=datetime.now(UTC)) is None  # pressed before ``since``: expired
    assert pending.awaited(ChatRef("discord", "-100"), Person("discord", "1"), since=long_ago) is None

    assert pending.drop(here, ada, since=long_ago) is True
    assert pending.drop(here, ada, since=long_ago) is False
    pending.drop_person(ada)  # /forget: every chat
    assert pending.awaited(there, ada, since=long_ago) is None
    assert pending.awaited(here, bea, since=long_ago) == 10

    # A later press sweeps away everyone's expired ones.
    pending.expect(there, bea, 11, stale=datetime.now(UTC) + timedelta(seconds=1))
    assert pending.awaited(here, bea, since=long_ago) is None
