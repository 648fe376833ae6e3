"""Showing one run of ``ChatService.handle`` in a Telegram chat.

The transcript comes first, quoted. While the reply waits for the model, its
place in line is shown (and updated) in the message it will then grow in. The
reply grows in one message, edited
at most once per interval and only when its text changed; past Telegram's 4,096
characters it continues in further messages. The finished reply gets the rating
buttons on its last piece.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from telegram import InlineKeyboardMarkup
from telegram.constants import MessageLimit

from bots.render import EditPacer, split_message
from bots.telegram_bot.buttons import rating_keyboard
from bots.telegram_bot.formatting import plain_text, reply_text, transcript_text
from bots.telegram_bot.outbox import Outbox, Target
from core.domain import Notice, NoticeKind, Queued, ReplyDelta, ReplyDone, ServiceEvent, Transcribed

MESSAGE_LIMIT = MessageLimit.MAX_TEXT_LENGTH

log = logging.getLogger(__name__)


@dataclass
class _Shown:
    message_id: int
    text: str


class ReplyStream:
    """Renders the events of one handled message; create one per message."""

    def __init__(self, outbox: Outbox, target: Target, edit_interval_s: float) -> None:
        self.outbox = outbox
        self.target = target
        self.pacer = EditPacer(edit_interval_s)
        self.shown: list[_Shown] = []

    async def render(self, events: AsyncIterator[ServiceEvent]) -> ReplyDone | None:
        """Show every event; return the finished reply, or None when there was none.

        If the chat cannot be written to (the person blocked the bot, Telegram is
        down), the events are still read to the end so that the service finishes
        and stores the reply; only the showing stops.
        """
        done: ReplyDone | None = None
        failed = False
        async with self.outbox.typing(self.target) as stop_typing:
            async for event in events:
                if isinstance(event, ReplyDone):
                    done = event
                if isinstance(event, ReplyDone | Notice):
                    stop_typing()
                if failed:
                    continue
                try:
                    await self._render(event)
                except Exception:
                    log.exception("could not show a reply in Telegram chat %s", self.target.chat_id)
                    failed = True
                    stop_typing()
        return done

    async def _render(self, event: ServiceEvent) -> None:
        if isinstance(event, Transcribed):
            await self.outbox.send(self.target, transcript_text(event.text))
        elif isinstance(event, Queued):
            await self._show_place(event.text())
        elif isinstance(event, ReplyDelta):
            if self.pacer.due(event.text) and await self._show(event.text):
                self.pacer.sent(event.text)
        elif isinstance(event, ReplyDone):
            await self._show(event.text, rating_keyboard(event.turn_id))
        elif event.kind is not NoticeKind.DUPLICATE:
            await self.outbox.send(self.target, plain_text(event.text))

    async def _show(self, text: str, buttons: InlineKeyboardMarkup | None = None) -> bool:
        """Bring the messages up to ``text``; return whether there was anything to show."""
        pieces = split_message(text, MESSAGE_LIMIT)
        for index, piece in enumerate(pieces):
            markup = buttons if index == len(pieces) - 1 else None
            if index < len(self.shown):
                shown = self.shown[index]
                if shown.text != piece:
                    await self.outbox.edit(self.target.chat_id, shown.message_id, reply_text(piece), markup)
                    shown.text = piece
                elif markup is not None:
                    # The text is already there: only the buttons change, and the
                    # person's screen does not redraw the text.
                    await self.outbox.edit_buttons(self.target.chat_id, shown.message_id, markup)
            else:
                message_id = await self.outbox.send(self._continuation(index), reply_text(piece), markup)
                self.shown.append(_Shown(message_id, piece))
        return bool(pieces)

    async def _show_place(self, text: str) -> None:
        """The place in line, in the message the reply will then grow in."""
        if not self.shown:
            message_id = await self.outbox.send(self.target, plain_text(text))
            self.shown.append(_Shown(message_id, text))
        elif self.shown[0].text != text:
            await self.outbox.edit(self.target.chat_id, self.shown[0].message_id, plain_text(text))
            self.shown[0].text = text

    def _continuation(self, index: int) -> Target:
        # Only the first piece answers the person's message; the rest follow it.
        if index == 0:
            return self.target
        return Target(self.target.chat_id, self.target.thread_id)
