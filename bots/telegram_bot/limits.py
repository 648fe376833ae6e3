"""Telegram's sending limits, honoured before they bite, one chat at a time.

Telegram allows about one message a second in a chat, 20 a minute in a group and 30 a
second overall, and answers more with 429 and a wait. python-telegram-bot's
``AIORateLimiter`` paces with aiolimiter too, but halts *every* request on any 429; a
busy group would then hold up every private chat. This limiter is the same idea
keyed per chat: each chat has its own aiolimiter bucket and its own pause, the whole
bot one overall bucket, and a 429 waits out only the chat it was about, then retries.
Typing indicators are never held back: they are cosmetic and Telegram limits them apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from bots.telegram_bot.periods import seconds

log = logging.getLogger(__name__)

BURST_S = 3  # a private chat may send this many seconds' worth at once
UNLIMITED = {"sendChatAction", "answerCallbackQuery", "getUpdates", "getFile", "getMe", "setWebhook"}


@dataclass
class _Chat:
    bucket: AsyncLimiter
    open: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while Telegram makes it wait

    def __post_init__(self) -> None:
        self.open.set()


class ChatRateLimiter(BaseRateLimiter[int]):
    def __init__(
        self,
        per_second_overall: float = 30,
        per_second_in_a_chat: float = 1,
        per_minute_in_a_group: float = 20,
        max_retries: int = 10,
    ) -> None:
        self.per_second_in_a_chat = per_second_in_a_chat
        self.per_minute_in_a_group = per_minute_in_a_group
        self.max_retries = max_retries  # 429s waited out for one call before it fails
        self._overall = AsyncLimiter(per_second_overall, 1)
        self._chats: dict[int | str, _Chat] = {}

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def _chat(self, chat_id: int | str) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            group = str(chat_id).startswith(("-", "@"))  # groups and channels have negative ids
            # Leaky buckets: the average Telegram allows, with a short burst (a transcript, then
            # the reply's first message) let through at once.
            bucket = (
                AsyncLimiter(self.per_minute_in_a_group, 60)
                if group
                else AsyncLimiter(self.per_second_in_a_chat * BURST_S, BURST_S)
            )
            chat = self._chats[chat_id] = _Chat(bucket)
        return chat

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        chat_id = data.get("chat_id")
        if chat_id is None or endpoint in UNLIMITED:
            return await callback(*args, **kwargs)
        chat = self._chat(chat_id)
        for attempt in range(self.max_retries + 1):
            await chat.open.wait()
            async with chat.bucket, self._overall:
                try:
                    return await callback(*args, **kwargs)
                except RetryAfter as flood:
                    if attempt == self.max_retries:
                        raise
                    wait = (seconds(flood, "retry_after") or 1.0) + 0.1
            log.warning("Telegram flood control in chat %s: waiting %.0f s before retrying", chat_id, wait)
            chat.open.clear()
            try:
                await asyncio.sleep(wait)
            finally:
                chat.open.set()
        raise AssertionError("unreachable")
