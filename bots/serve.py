"""Serving the chat platforms: every configured adapter in one process, one loaded model."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading

from bots.app import build_app
from bots.settings import Settings

log = logging.getLogger(__name__)

# Each adapter package exposes ``async def serve(service, settings, inbox) -> None``,
# which runs until it is cancelled; ``inbox`` keeps updates in the database until answered.
ADAPTERS = {"telegram": "bots.telegram_bot", "discord": "bots.discord_bot"}
# Once asked to stop (Ctrl+C, SIGTERM), the process exits within this many seconds even if an
# adapter's stop hangs: what it had claimed is claimed again by the next process (docs/deploy.md).
STOP_WITHIN_S = 20.0


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
            if settings.chat.retention_days > 0:
                group.create_task(application.service.keep_pruning(), name="retention")
            group.create_task(_stop_within(STOP_WITHIN_S), name="stop-watchdog")
    finally:
        application.close()


async def _stop_within(seconds: float) -> None:
    """Wait until the bots are cancelled, then make sure the process ends within ``seconds``.

    In one full test run, `iris run` processes sometimes did not get past stopping their
    platform client after Ctrl+C (cause not found yet); a stop must never hang for good.
    """
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:

        def give_up() -> None:
            log.error("the bots did not stop within %.0f s; exiting anyway", seconds)
            logging.shutdown()
            os._exit(130)

        timer = threading.Timer(seconds, give_up)
        timer.daemon = True
        timer.start()
        raise
