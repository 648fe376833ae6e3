"""Telegram's side of ``bots.delivery``: texts go out as HTML (``Outbox`` falls back to plain text
when Telegram refuses the markup); only a text's first message answers the person's, the rest follow it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telegram import InlineKeyboardMarkup
from telegram.constants import MessageLimit
from telegram.error import BadRequest

from bots.delivery import Style
from bots.telegram_bot.buttons import rating_keyboard
from bots.telegram_bot.formatting import plain_text, reply_text, transcript_text
from bots.telegram_bot.outbox import Outbox, Target
from bots.telegram_bot.voice import send_voice
from core.domain import Speech

_FORMATS = {"transcript": transcript_text, "reply": reply_text, "note": plain_text}


@dataclass
class Shown:
    """The messages shown in answer to one update, kept with it in the inbox by ``record``.

    A process killed mid-reply leaves its messages in the chat; the process that takes the update
    over finds them in ``earlier`` and edits them (the transcript in place, the broken-off reply
    grown into the whole one) instead of sending the answer a second time below them.
    """

    earlier: dict[str, list[int]]  # by kind ("transcript", "reply"): what an earlier attempt showed
    record: Callable[[dict[str, list[int]]], Awaitable[None]]
    now: dict[str, list[int]] = field(init=False)  # what the record holds: the earlier ids until replaced

    def __post_init__(self) -> None:
        self.now = {kind: list(ids) for kind, ids in self.earlier.items()}

    def take(self, kind: str, index: int) -> int | None:
        """The earlier attempt's message at ``index`` of ``kind``, once."""
        earlier = self.earlier.get(kind, [])
        if index >= len(earlier) or earlier[index] < 0:
            return None
        message, earlier[index] = earlier[index], -1
        return message

    async def add(self, kind: str, index: int, message: int) -> None:
        ids = self.now.setdefault(kind, [])
        if index < len(ids):
            ids[index] = message
        else:
            ids.append(message)
        await self.record(self.now)

    def unused(self) -> list[int]:
        """The earlier attempt's reply messages this one did not take: the end of a longer
        broken-off reply, or a reply that became a notice. Its transcript stays, shown or not."""
        return [message for message in self.earlier.get("reply", []) if message >= 0]


@dataclass
class TelegramChat:
    """Messages in one Telegram chat (or forum topic), in answer to one message; ids name them."""

    outbox: Outbox
    target: Target
    limit: int = MessageLimit.MAX_TEXT_LENGTH
    voice_reply_to: int | None = None  # the person's message: a voice note answers it even in private
    shown: Shown | None = None  # None: nothing is kept (no inbox)

    async def send(self, style: Style, text: str, turn_id: int | None, index: int) -> int:
        kind = "transcript" if style == "transcript" else "reply"
        earlier = self.shown.take(kind, index) if self.shown is not None else None
        message = await self._reuse(earlier, style, text, turn_id) if earlier is not None else None
        if message is None:
            target = self.target if index == 0 else Target(self.target.chat_id, self.target.thread_id)
            message = await self.outbox.send(target, _FORMATS[style](text), _buttons(turn_id))
        if self.shown is not None:
            await self.shown.add(kind, index, message)
        return message

    async def _reuse(self, message: int, style: Style, text: str, turn_id: int | None) -> int | None:
        """An earlier attempt's message edited to ``text``; None when it is gone (deleted by the person)."""
        try:
            return await self.edit(message, style, text, turn_id)
        except BadRequest:
            return None

    async def drop_unused(self) -> None:
        """Delete what an earlier attempt showed of its reply that this answer did not reuse."""
        for message in self.shown.unused() if self.shown is not None else []:
            await self.delete(message)

    async def edit(self, message: int, style: Style, text: str, turn_id: int | None) -> int:
        await self.outbox.edit(self.target.chat_id, message, _FORMATS[style](text), _buttons(turn_id))
        return message

    async def add_buttons(self, message: int, turn_id: int) -> int:
        await self.outbox.edit_buttons(self.target.chat_id, message, rating_keyboard(turn_id))
        return message

    async def delete(self, message: int) -> None:
        with contextlib.suppress(BadRequest):  # already gone
            await self.outbox.call(lambda: self.outbox.bot.delete_message(self.target.chat_id, message))

    async def keep_typing(self) -> None:
        async with self.outbox.typing(self.target):
            await asyncio.Event().wait()

    async def send_voice(self, speech: Speech) -> None:
        target = self.target
        await send_voice(self.outbox, Target(target.chat_id, target.thread_id, self.voice_reply_to), speech)


def _buttons(turn_id: int | None) -> InlineKeyboardMarkup | None:
    return None if turn_id is None else rating_keyboard(turn_id)
