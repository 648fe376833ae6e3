"""Telegram's side of ``bots.delivery``: texts go out as HTML (``Outbox`` falls back to plain text
when Telegram refuses the markup); only a text's first message answers the person's, the rest follow it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

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
class TelegramChat:
    """Messages in one Telegram chat (or forum topic), in answer to one message; ids name them."""

    outbox: Outbox
    target: Target
    limit: int = MessageLimit.MAX_TEXT_LENGTH
    voice_reply_to: int | None = None  # the person's message: a voice note answers it even in private

    async def send(self, style: Style, text: str, turn_id: int | None, index: int) -> int:
        target = self.target if index == 0 else Target(self.target.chat_id, self.target.thread_id)
        return await self.outbox.send(target, _FORMATS[style](text), _buttons(turn_id))

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
