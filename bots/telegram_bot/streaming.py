"""Showing one run of ``ChatService.handle`` in a Telegram chat.

The transcript comes first, quoted. The reply then grows in one message, edited
at most once per interval and only when its text changed; past Telegram's 4,096
characters it continues in further messages. The finished reply gets the rating
buttons on its last piece.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from telegram import InlineKeyboardMarkup
from telegram.constants import MessageLimit

from bots.render import EditPacer, split_message
from bots.telegram_bot.buttons import rating_keyboard
from bots.telegram_bot.formatting import plain_text, reply_text, transcript_text
from bots.telegram_bot.outbox import Outbox, Target
from core.domain import Notice, NoticeKind, ReplyDelta, ReplyDone, ServiceEvent, Transcribed

MESSAGE_LIMIT = MessageLimit.MAX_TEXT_LENGTH


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
        """Show every event; return the finished reply, or None when there was none."""
        done: ReplyDone | None = None
        async with self.outbox.typing(self.target) as stop_typing:
            async for event in events:
                if isinstance(event, Transcribed):
                    await self.outbox.send(self.target, transcript_text(event.text))
                elif isinstance(event, ReplyDelta):
                    if self.pacer.due(event.text):
                        await self._show(event.text)
                        self.pacer.sent(event.text)
                elif isinstance(event, ReplyDone):
                    stop_typing()
                    await self._show(event.text, rating_keyboard(event.turn_id))
                    done = event
                elif event.kind is not NoticeKind.DUPLICATE:
                    stop_typing()
                    await self._notice(event)
        return done

    async def _show(self, text: str, buttons: InlineKeyboardMarkup | None = None) -> None:
        pieces = split_message(text, MESSAGE_LIMIT)
        for index, piece in enumerate(pieces):
            markup = buttons if index == len(pieces) - 1 else None
            if index < len(self.shown):
                shown = self.shown[index]
                if shown.text != piece or markup is not None:
                    await self.outbox.edit(self.target.chat_id, shown.message_id, reply_text(piece), markup)
                    shown.text = piece
            else:
                message_id = await self.outbox.send(self._continuation(index), reply_text(piece), markup)
                self.shown.append(_Shown(message_id, piece))

    def _continuation(self, index: int) -> Target:
        # Only the first piece answers the person's message; the rest follow it.
        if index == 0:
            return self.target
        return Target(self.target.chat_id, self.target.thread_id)

    async def _notice(self, notice: Notice) -> None:
        await self.outbox.send(self.target, plain_text(notice.text))
