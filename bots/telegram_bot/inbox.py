"""Telegram updates made durable: stored in the database before Telegram hears "200 OK".

python-telegram-bot's polling loop and its webhook server both hand each update to
``application.update_queue.put`` before they acknowledge it. ``DurableUpdates`` is that
queue: its ``put`` stores the update in the inbox (``core.ports.Inbox``) and returns,
and its pump claims stored updates — from every process sharing the database — and
feeds them to the application, one at a time per person and chat. A process that is
killed loses nothing it acknowledged: its claims run out and another process (or this
one, restarted) answers them.

Button presses and commands never wait for the model: they are stored as urgent and
claimed in a pass of their own, with their own bound, so a crowd of voice notes filling
the messages' capacity never holds a 👍 or a /help.

An update whose handling kills the process (or hangs it past its lease) on every attempt
the inbox allows is set aside instead: its sender is told, and the queue goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot, MessageEntity, Update
from telegram.error import TelegramError

from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.outbox import Outbox, Target
from bots.telegram_bot.streaming import Shown
from core.i18n import N_, _
from core.ports import Inbox, InboxItem

log = logging.getLogger(__name__)

PLATFORM = "telegram"
SET_ASIDE = N_("Sorry, I couldn't handle that message; it has been set aside.")
# Presses and commands handled at once by one process, beside the messages: they are quick
# (a database write, a short reply) and never reach the model.
URGENT_CAPACITY = 32


def is_urgent(update: Update) -> bool:
    """A button press or a command, which never waits behind messages for the model.

    A command is what Telegram marks as one (a ``bot_command`` entity at offset 0), as PTB's
    ``CommandHandler`` matches it: a text that merely starts with "/" goes to the model.
    """
    if update.callback_query is not None:
        return True
    message = update.message
    if message is None or not message.entities:
        return False
    first = message.entities[0]
    return first.type == MessageEntity.BOT_COMMAND and first.offset == 0


def order_key(update: Update) -> str:
    """Messages of one person in one chat are answered in order; commands and presses never wait."""
    message = update.message
    if message is None or message.from_user is None or is_urgent(update):
        return f"update:{update.update_id}"
    return f"{message.chat.id}:{message.from_user.id}"


class DurableUpdates(asyncio.Queue[Any]):
    """PTB's update queue, backed by the inbox."""

    def __init__(
        self,
        inbox: Inbox,
        lease_s: float = 30.0,
        capacity: int = 64,
        poll_s: float = 0.5,
        urgent_capacity: int = URGENT_CAPACITY,
    ) -> None:
        super().__init__()
        self.inbox = inbox
        self.lease_s = lease_s
        self.capacity = capacity  # messages this process handles at once
        self.urgent_capacity = urgent_capacity  # presses and commands, counted apart
        self.poll_s = poll_s  # how often to look for updates other processes stored
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handling: dict[int, int] = {}  # update id -> inbox item id
        self._urgent: set[int] = set()  # the presses and commands among them
        self._redelivered: set[int] = set()
        self._earlier: dict[int, dict[str, list[int]]] = {}  # what a stopped process showed, by update id
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._notices: set[asyncio.Task[None]] = set()  # "set aside" notices being sent
        # Sets the language of an update's sender in the current task, as the handlers choose it
        # (``Adapter.speak_to``); the notice is sent outside any handler. None: English.
        self.speak: Callable[[Update], Awaitable[None]] | None = None

    async def put(self, item: Any) -> None:
        if not isinstance(item, Update):  # PTB's own signals (its stop) pass straight through
            await super().put(item)
            return
        stored = await asyncio.to_thread(
            self.inbox.put, PLATFORM, str(item.update_id), order_key(item), item.to_dict(), is_urgent(item)
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
        if self._notices:  # the bot's connection closes next: let notices on their way arrive
            await asyncio.wait(self._notices, timeout=5.0)

    def redelivered(self, update_id: int) -> bool:
        """Whether this process took the update over from one that stopped while handling it."""
        return update_id in self._redelivered

    def shown_for(self, update_id: int) -> Shown | None:
        """The record of what is shown in answer to an update being handled, with what a stopped
        process had shown for it (once: a later call starts from nothing)."""
        item = self._handling.get(update_id)
        if item is None:
            return None

        async def record(shown: dict[str, list[int]]) -> None:
            try:
                await asyncio.to_thread(self.inbox.note_shown, self.owner, item, shown)
            except Exception:  # the answer matters more: at worst a takeover repeats it below
                log.exception("could not note the messages shown for update %s", update_id)

        return Shown(self._earlier.pop(update_id, {}), record)

    async def finished(self, update: object) -> None:
        """The application handled ``update`` (answered, refused or failed with a notice)."""
        if not isinstance(update, Update):
            return
        item = self._handling.pop(update.update_id, None)
        self._urgent.discard(update.update_id)
        self._redelivered.discard(update.update_id)
        self._earlier.pop(update.update_id, None)
        if item is not None:
            try:
                await asyncio.to_thread(self.inbox.done, item)
            except Exception:
                log.exception("could not mark update %s handled; another process may answer it again", item)
        self._wake.set()

    async def _run(self, bot: Bot) -> None:
        renewed = -self.lease_s
        while True:
            self._wake.clear()
            try:
                # Renew before claiming: after the loop stalled past a lease, this process takes
                # its own updates back rather than claiming (and answering) them a second time.
                if time.monotonic() - renewed > self.lease_s / 3:
                    await asyncio.to_thread(
                        self.inbox.renew, self.owner, list(self._handling.values()), self.lease_s
                    )
                    renewed = time.monotonic()
                    for failed in await asyncio.to_thread(self.inbox.set_aside, PLATFORM):
                        # Sent beside the pump: a slow send must not delay the renewals.
                        notice = asyncio.create_task(self._tell_set_aside(bot, failed))
                        self._notices.add(notice)
                        notice.add_done_callback(self._notices.discard)
                await self._claim(bot)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the Telegram inbox could not be read; trying again")
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that arrives as
            # the event is set (an update finishing while the bot stops), and stop() then waits forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()

    async def _claim(self, bot: Bot) -> None:
        # Presses and commands first, against their own bound: however many messages wait for
        # the model, a press is claimed the moment it is stored.
        await self._claim_kind(bot, urgent=True, free=self.urgent_capacity - len(self._urgent))
        messages = len(self._handling) - len(self._urgent)
        await self._claim_kind(bot, urgent=False, free=self.capacity - messages)

    async def _claim_kind(self, bot: Bot, urgent: bool, free: int) -> None:
        if free <= 0:
            return
        for item in await asyncio.to_thread(self.inbox.claim, PLATFORM, self.owner, self.lease_s, free, urgent):
            try:
                update = Update.de_json(item.payload, bot)
            except Exception:  # never readable: its lease runs out, and after its attempts it is set aside
                log.exception("stored update %s cannot be read", item.id)
                continue
            if update.update_id in self._handling:  # ours still, claimed back after a stall: already queued
                continue
            self._handling[update.update_id] = item.id
            if urgent:
                self._urgent.add(update.update_id)
            if item.attempts > 1:
                log.warning(
                    "answering update %s, which a stopped process had taken (attempt %d)",
                    update.update_id,
                    item.attempts,
                )
                self._redelivered.add(update.update_id)
                self._earlier[update.update_id] = {kind: list(ids) for kind, ids in item.shown.items()}
            await super().put(update)

    async def _tell_set_aside(self, bot: Bot, item: InboxItem) -> None:
        """Tell the sender of an update that no attempt finished that it was set aside."""
        try:
            update = Update.de_json(item.payload, bot)
        except Exception:
            log.error("set aside stored update %s after %d attempts; it cannot be read", item.id, item.attempts)
            return
        # Which kind of update, never its words: the payload is a person's message.
        log.error(
            "set aside update %s (%s): none of its %d attempts finished (a crash or a stall past the lease)",
            update.update_id,
            _kind(update),
            item.attempts,
        )
        message = update.effective_message
        if update.callback_query is not None or message is None:
            return  # a press: its answer was due within seconds, long gone
        thread = message.message_thread_id if message.is_topic_message else None
        target = Target(message.chat.id, thread, message.message_id)
        if self.speak is not None:  # this task is the notice's own: the language holds for it only
            try:
                await self.speak(update)
            except Exception:  # the notice matters more than its language: English, then
                log.exception("could not look up the language of update %s's sender", update.update_id)
        try:
            await Outbox(bot).send(target, plain_text(_(SET_ASIDE)))
        except TelegramError as error:  # told at most once: it is marked failed before the notice
            log.warning(
                "could not tell chat %s that update %s was set aside: %s", message.chat.id, item.id, error
            )


def _kind(update: Update) -> str:
    """What an update holds, for the logs, without its words."""
    message = update.effective_message
    if message is None:
        return "no message"
    attachment = message.effective_attachment
    if attachment is None:
        return f"text of {len(message.text or '')} characters"
    size = getattr(attachment, "file_size", None)
    return f"{type(attachment).__name__.lower()} of {size} bytes" if size is not None else "an attachment"
