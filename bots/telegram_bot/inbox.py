"""Telegram updates made durable: stored in the database before Telegram hears "200 OK".

python-telegram-bot's polling loop and its webhook server both hand each update to
``application.update_queue.put`` before they acknowledge it. ``DurableUpdates`` is that
queue: its ``put`` stores the update in the inbox (``core.ports.Inbox``) and returns,
and its pump claims stored updates — from every process sharing the database — and
feeds them to the application, one at a time per person and chat. A process that is
killed loses nothing it acknowledged: its claims run out and another process (or this
one, restarted) answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from telegram import Bot, Update

from core.ports import Inbox

log = logging.getLogger(__name__)

PLATFORM = "telegram"


def order_key(update: Update) -> str:
    """Messages of one person in one chat are answered in order; commands and presses never wait."""
    message = update.message
    if message is None or message.from_user is None or (message.text or "").startswith("/"):
        return f"update:{update.update_id}"
    return f"{message.chat.id}:{message.from_user.id}"


class DurableUpdates(asyncio.Queue[Any]):
    """PTB's update queue, backed by the inbox."""

    def __init__(self, inbox: Inbox, lease_s: float = 30.0, capacity: int = 64, poll_s: float = 0.5) -> None:
        super().__init__()
        self.inbox = inbox
        self.lease_s = lease_s
        self.capacity = capacity  # updates this process handles at once
        self.poll_s = poll_s  # how often to look for updates other processes stored
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handling: dict[int, int] = {}  # update id -> inbox item id
        self._redelivered: set[int] = set()
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def put(self, item: Any) -> None:
        if not isinstance(item, Update):  # PTB's own signals (its stop) pass straight through
            await super().put(item)
            return
        stored = await asyncio.to_thread(
            self.inbox.put, PLATFORM, str(item.update_id), order_key(item), item.to_dict()
        )
        if not stored:
            log.info("Telegram delivered update %s again; it was stored before", item.update_id)
        self._wake.set()

    def start(self, bot: Bot) -> None:
        self._pump = asyncio.create_task(self._run(bot), name="telegram-inbox")

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    def redelivered(self, update_id: int) -> bool:
        """Whether this process took the update over from one that stopped while handling it."""
        return update_id in self._redelivered

    async def finished(self, update: object) -> None:
        """The application handled ``update`` (answered, refused or failed with a notice)."""
        if not isinstance(update, Update):
            return
        item = self._handling.pop(update.update_id, None)
        self._redelivered.discard(update.update_id)
        if item is not None:
            try:
                await asyncio.to_thread(self.inbox.done, item)
            except Exception:
                log.exception("could not mark update %s handled; another process may answer it again", item)
        self._wake.set()

    async def _run(self, bot: Bot) -> None:
        renewed = time.monotonic()
        while True:
            self._wake.clear()
            try:
                free = self.capacity - len(self._handling)
                if free > 0:
                    for item in await asyncio.to_thread(
                        self.inbox.claim, PLATFORM, self.owner, self.lease_s, free
                    ):
                        update = Update.de_json(item.payload, bot)
                        self._handling[update.update_id] = item.id
                        if item.attempts > 1:
                            log.warning(
                                "answering update %s, which a stopped process had taken", update.update_id
                            )
                            self._redelivered.add(update.update_id)
                        await super().put(update)
                if time.monotonic() - renewed > self.lease_s / 3:
                    await asyncio.to_thread(
                        self.inbox.renew, self.owner, list(self._handling.values()), self.lease_s
                    )
                    renewed = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the Telegram inbox could not be read; trying again")
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that arrives as
            # the event is set (an update finishing while the bot stops), and stop() then waits forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
