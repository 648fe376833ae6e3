"""Fixtures for the Discord adapter: a fake Discord per test, the real client against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bots.app import App
from bots.discord_bot import build_client
from bots.discord_bot.client import IrisClient
from bots.settings import Settings
from core.generation import LlamaGenerator
from core.service import ChatService
from tests.conftest import make_settings
from tests.discord.fake_discord import FakeDiscord, Interaction, Json, custom_ids


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()


def discord_settings(tmp_path: Path, served_gguf: Path, fake: FakeDiscord, **overrides: Any) -> Settings:
    """Settings pointing the bot at the fake, with the fake server's owner as the one admin."""
    values: dict[str, Any] = {
        "discord_bot_token": fake.token,
        "discord_api_base_url": fake.base_url,
        "admin_user_ids": [fake.owner["id"]],
    }
    values.update(overrides)
    return make_settings(tmp_path, served_gguf, **values)


@pytest.fixture
def service(app: App, generator: LlamaGenerator) -> ChatService:
    """The application's service on a fresh database, sharing the session's loaded models."""
    app.service.writer.generator = generator
    return app.service


@contextlib.asynccontextmanager
async def running(service: ChatService, settings: Settings, fake: FakeDiscord) -> AsyncIterator[IrisClient]:
    """The real discord.py client, connected to the fake and ready."""
    client = build_client(service, settings)
    token = settings.discord_bot_token.get_secret_value() if settings.discord_bot_token else ""
    task = asyncio.create_task(client.start(token))
    try:
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises why the client stopped
        assert ready in done, "the client did not get ready"
        yield client
    finally:
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


# --- what ends up stored ---------------------------------------------------------


@dataclass(frozen=True)
class StoredTurn:
    id: int
    role: str
    text: str | None
    conversation_id: int
    thread_id: str
    message_id: str | None
    from_voice: bool
    error: str | None


def stored_turns(app: App) -> list[StoredTurn]:
    """Every turn in the test's database, oldest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from storage.tables import ConversationRow, TurnRow

    query = (
        select(
            TurnRow.id,
            TurnRow.role,
            TurnRow.text,
            TurnRow.conversation_id,
            ConversationRow.thread_id,
            TurnRow.platform_message_id,
            TurnRow.from_voice,
            TurnRow.error,
        )
        .join(ConversationRow, ConversationRow.id == TurnRow.conversation_id)
        .order_by(TurnRow.id)
    )
    with Session(app.store.engine) as session:
        return [StoredTurn(*row) for row in session.execute(query).all()]


def stored_ratings(app: App) -> list[tuple[int, str, int]]:
    """(turn id, who, value) for every rating stored."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from storage.tables import PersonRow, RatingRow

    query = select(RatingRow.turn_id, PersonRow.user_id, RatingRow.value).join(
        PersonRow, PersonRow.id == RatingRow.person_id
    )
    with Session(app.store.engine) as session:
        return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]


# --- waiting for what a person would see -------------------------------------------


async def finished_reply(fake: FakeDiscord, message: Json, timeout: float = 60) -> Json:
    """The bot's finished answer to a message: its last piece, the one with the buttons."""
    source = int(message["id"])

    def done() -> Json | None:
        return next((m for m in reversed(fake.replies_to(source)) if m["components"]), None)

    reply: Json = await fake.wait_for(done, timeout, f"a finished reply to message {source}")
    return reply


async def first_answer(fake: FakeDiscord, message: Json, timeout: float = 60) -> Json:
    """The bot's first message in reply to a message (a refusal, a notice, a transcript...)."""
    source = int(message["id"])
    answers: list[Json] = await fake.wait_for(
        lambda: fake.replies_to(source), timeout, f"an answer to {source}"
    )
    return answers[0]


def turn_of(reply: Json) -> int:
    """The turn id the 👍 button of a reply carries."""
    rate_up = next(i for i in custom_ids(reply) if i.startswith("iris:rate:up:"))
    return int(rate_up.rsplit(":", 1)[1])


async def shown(fake: FakeDiscord, interaction: Interaction, count: int = 1, timeout: float = 30) -> list[str]:
    """The texts the person saw in answer to an interaction, once there are ``count`` of them."""
    texts: list[str] = await fake.wait_for(
        lambda: interaction.shown if len(interaction.shown) >= count else None,
        timeout,
        f"{count} answer(s) to interaction {interaction.id}",
    )
    return texts
