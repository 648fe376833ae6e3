"""Serving the chat platforms: every configured adapter in one process, one loaded model."""

from __future__ import annotations

import asyncio
import importlib
import logging

from bots.app import build_app, serve_web
from bots.settings import Settings

log = logging.getLogger(__name__)

# Each adapter package exposes ``async def serve(service, settings, inbox) -> None``,
# which runs until it is cancelled; ``inbox`` keeps updates in the database until answered.
ADAPTERS = {"telegram": "bots.telegram_bot", "discord": "bots.discord_bot"}


async def serve(settings: Settings, platforms: list[str]) -> None:
    application = build_app(settings)
    try:
        log.info("loading models")
        await asyncio.to_thread(application.warm_up)
        async with asyncio.TaskGroup() as group:
            for name in platforms:
                adapter = importlib.import_module(ADAPTERS[name])
                log.info("starting the %s bot", name)
                group.create_task(adapter.serve(application.service, settings, application.inbox), name=name)
            if settings.web.port:  # the admins' console, on the same service and store (docs/web.md)
                group.create_task(serve_web(application), name="web")
            if settings.chat.retention_days > 0:
                group.create_task(application.service.privacy.keep_pruning(), name="retention")
    finally:
        application.close()
