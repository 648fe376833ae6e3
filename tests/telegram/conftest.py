"""Fixtures for the Telegram scenarios: a fake Bot API, and the real PTB application talking to it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from bots.app import App
from bots.settings import Settings
from bots.telegram_bot import build_application, running
from tests.conftest import make_settings
from tests.telegram.fake_bot_api import TOKEN, FakeBotApi

ADMIN_ID = 900


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeBotApi]:
    api = FakeBotApi()
    await api.start()
    yield api
    await api.stop()


def telegram_settings(tmp_path: Path, served_gguf: Path, api: FakeBotApi, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN,
        "telegram_base_url": api.base_url,
        "telegram_base_file_url": api.base_file_url,
        # Short, so that the small model's reply (under a second) is seen growing.
        "telegram_edit_interval_seconds": 0.2,
        "telegram_group_edit_interval_seconds": 0.2,
        "admin_user_ids": [str(ADMIN_ID)],
    }
    values.update(overrides)
    return make_settings(tmp_path, served_gguf, **values)


StartBot = Callable[..., Awaitable[Settings]]


@pytest.fixture
async def start_bot(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> AsyncIterator[StartBot]:
    """Start the real Telegram application on the ``app`` fixture's service; stopped after the test."""
    stack = AsyncExitStack()

    async def start(**overrides: Any) -> Settings:
        settings = telegram_settings(tmp_path, served_gguf, fake_api, **overrides)
        application = build_application(app.service, settings)
        await stack.enter_async_context(running(application, settings))
        return settings

    yield start
    await stack.aclose()


def query(app: App, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows from the test's SQLite database, read the way an operator would."""
    path = Path(app.settings.data_dir) / "iris.db"
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, args).fetchall()
