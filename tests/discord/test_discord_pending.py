"""The ✏️ form on Discord: one opened before a restart (or by another process) still lands when sent.

The form's custom id carries the reply's turn id and every submit is taken by a listener the
client always has, not by a Modal object in the memory of the process that opened it. Each
scenario runs on SQLite and on PostgreSQL, with a new ``App`` (a new process) after the restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bots.app import App, build_app
from bots.discord_bot.components import GONE, SAVED
from bots.settings import Settings
from core.access import REFUSAL
from core.domain import CorrectionStatus
from core.generation import LlamaGenerator
from core.transcription import WhisperTranscriber
from tests.discord.conftest import discord_settings, finished_reply, running, shown, turn_of
from tests.discord.fake_discord import FakeDiscord, Interaction, Json

BETTER = "William Shakespeare wrote Hamlet."


class Processes:
    """Iris processes on one database, each built from the settings as ``iris run discord`` is."""

    def __init__(self, settings: Settings, shared: tuple[WhisperTranscriber, LlamaGenerator]) -> None:
        self.settings = settings
        self.shared = shared
        self.apps: list[App] = []

    def start(self) -> App:
        app = build_app(self.settings)
        # The models load once per session.
        app.service.listener.transcriber, app.service.writer.generator = self.shared
        self.apps.append(app)
        return app


@pytest.fixture
def processes(
    database_url: str,
    fake: FakeDiscord,
    tmp_path: Path,
    served_gguf: Path,
    transcriber: WhisperTranscriber,
    generator: LlamaGenerator,
) -> Iterator[Processes]:
    settings = discord_settings(tmp_path, served_gguf, fake, database_url=database_url)
    shared = Processes(settings, (transcriber, generator))
    yield shared
    for app in shared.apps:
        app.store.engine.dispose()


async def open_form(fake: FakeDiscord, app: App, settings: Settings, person: Json) -> tuple[int, Interaction]:
    """Ask in a DM, press ✏️ under the reply: the reply's turn and the interaction that opened the form."""
    async with running(app.service, settings, fake):
        sent = await fake.post(person, "Who wrote Hamlet?", dm=True)
        reply = await finished_reply(fake, sent)
        opened = await fake.press(int(reply["id"]), f"iris:fix:{turn_of(reply)}", person)
        await fake.wait_for(lambda: opened.modal, 30, "the correction form")
    return turn_of(reply), opened


async def test_a_form_opened_before_a_restart_is_stored_when_sent_after_it(
    processes: Processes, fake: FakeDiscord
) -> None:
    person = fake.add_user("ada")
    turn, opened = await open_form(fake, processes.start(), processes.settings, person)

    after = processes.start()
    async with running(after.service, processes.settings, fake):
        submitted = await fake.submit(opened, f"  {BETTER}  ")
        assert await shown(fake, submitted) == [SAVED]

    [stored] = after.store.corrections(CorrectionStatus.PENDING)
    assert (stored.turn_id, stored.text, stored.person.user_id) == (turn, BETTER, str(person["id"]))


async def test_a_form_sent_while_the_bot_runs_is_stored_once(processes: Processes, fake: FakeDiscord) -> None:
    person = fake.add_user("ada")
    app = processes.start()
    async with running(app.service, processes.settings, fake):
        sent = await fake.post(person, "Who wrote Hamlet?", dm=True)
        reply = await finished_reply(fake, sent)
        opened = await fake.press(int(reply["id"]), f"iris:fix:{turn_of(reply)}", person)
        await fake.wait_for(lambda: opened.modal, 30, "the correction form")
        submitted = await fake.submit(opened, BETTER)
        assert await shown(fake, submitted) == [SAVED]

    assert [c.text for c in app.store.corrections(CorrectionStatus.PENDING)] == [BETTER]
    assert len(submitted.callbacks) == 1  # answered by one handler, not by a stored Modal as well


async def test_a_form_naming_someone_elses_reply_or_sent_by_a_stranger_stores_nothing(
    processes: Processes, fake: FakeDiscord, tmp_path: Path, served_gguf: Path
) -> None:
    ada, bea, eve = fake.add_user("ada"), fake.add_user("bea"), fake.add_user("eve")
    app = processes.start()
    bea_turn, _ = await open_form(fake, app, processes.settings, bea)
    _, opened = await open_form(fake, app, processes.settings, ada)
    assert opened.modal is not None
    # The custom id comes from the client: Ada's form rewritten to name the reply in Bea's DM.
    opened.modal["custom_id"] = f"iris:fix-form:{bea_turn}"
    async with running(app.service, processes.settings, fake):
        forged = await fake.submit(opened, BETTER)
        assert await shown(fake, forged) == [GONE]

    url = processes.settings.database_url
    only_ada = discord_settings(tmp_path, served_gguf, fake, database_url=url, allowed_user_ids=[ada["id"]])
    async with running(app.service, only_ada, fake):
        stranger = await fake.submit(opened, BETTER, user=eve)
        assert await shown(fake, stranger) == [REFUSAL]

    assert app.store.corrections(CorrectionStatus.PENDING) == []
