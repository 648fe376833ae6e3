"""Telegram's sending limits, honoured before they bite, one chat at a time.

Telegram allows about one message a second in a chat (short bursts pass), 20 a minute in a
group and 30 a second overall, and answers more with 429 and a wait. python-telegram-bot's
``AIORateLimiter`` halts *every* request on any 429, so a busy group would hold up every
private chat; and its aiolimiter buckets let a full burst through and then refill, so a
group bucket of 20 a minute sends up to 40 in one minute, which Telegram refuses. This
limiter counts sliding windows instead: a chat sends at most ``BURST_S`` seconds' worth in
any ``BURST_S`` seconds, a group at most 20 in any minute, the bot at most 30 in any second.
Each chat waits its turn in order and has its own pause: a 429 waits out only the chat it
was about, then retries. Telegram counts a message when it arrives, which this side cannot see:
a send counts from the moment its answer came back (the latest it can have arrived), and as
just sent while it is on its way, so a request slowed on the way cannot bunch up with the next.
Typing indicators are never held back: they are cosmetic and Telegram limits them apart. A
chat quiet for longer than its longest window is forgotten (it would wait for nothing anyway),
so a bot that meets many chats does not keep them all.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from bots.telegram_bot.periods import seconds

log = logging.getLogger(__name__)

BURST_S = 3  # a chat may send this many seconds' worth at once
UNLIMITED = {"sendChatAction", "answerCallbackQuery", "getUpdates", "getFile", "getMe", "setWebhook"}
# Telegram's own counting is not documented to the millisecond: each window is kept this much wider.
MARGIN = 0.05  # of the window's length
MIN_MARGIN_S = 0.05
IN_FLIGHT_POLL_S = 0.02  # how often a send held back by one still on its way looks again


class Send:
    """One counted send: when its answer came back, or infinity while it is on its way."""

    def __init__(self) -> None:
        self.at = math.inf

    def answered(self) -> None:
        self.at = time.monotonic()


class Window:
    """At most ``limit`` sends in any ``period`` seconds, each counted from when it was answered."""

    def __init__(self, limit: float, period: float) -> None:
        self.limit = max(1, int(limit))
        self.period = period + max(period * MARGIN, MIN_MARGIN_S)
        self._sends: list[Send] = []  # those that may still be inside the window

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until one more send fits; zero or less when it does."""
        self._sends = [send for send in self._sends if send.at + self.period > now]
        over = len(self._sends) - self.limit
        if over < 0:
            return 0.0
        leaves = sorted(send.at for send in self._sends)[over]  # the one whose leaving makes room
        return IN_FLIGHT_POLL_S if leaves == math.inf else leaves + self.period - now

    def add(self, send: Send) -> None:
        self._sends.append(send)

    def idle(self, now: float) -> bool:
        """Whether nothing is on its way or within the window: it holds nothing back now."""
        return all(send.at + self.period <= now for send in self._sends)


@dataclass
class _Chat:
    windows: list[Window]
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # the chat's sends leave in order
    open: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while Telegram makes it wait

    def __post_init__(self) -> None:
        self.open.set()

    def idle(self, now: float) -> bool:
        """Nothing sending, waiting or paused, and nothing sent within any of its windows."""
        return not self.turn.locked() and self.open.is_set() and all(w.idle(now) for w in self.windows)


class ChatRateLimiter(BaseRateLimiter[int]):
    """Per-chat and overall sliding windows; ``time_scale`` shortens every one of them (for tests)."""

    def __init__(
        self,
        per_second_overall: float = 30,
        per_second_in_a_chat: float = 1,
        per_minute_in_a_group: float = 20,
        max_retries: int = 10,
        time_scale: float = 1.0,
    ) -> None:
        self.per_second_in_a_chat = per_second_in_a_chat
        self.per_minute_in_a_group = per_minute_in_a_group
        self.max_retries = max_retries  # 429s waited out for one call before it fails
        self.time_scale = time_scale
        self._overall = Window(per_second_overall, time_scale)
        self._chats: dict[int | str, _Chat] = {}
        # Idle chats are looked for at most once per the longest window (a group's minute).
        self._sweep_every = 60 * time_scale
        self._swept_at = time.monotonic()

    @property
    def chats(self) -> int:
        """How many chats it keeps windows for now."""
        return len(self._chats)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def _chat(self, chat_id: int | str) -> _Chat:
        self._forget_idle(time.monotonic())
        chat = self._chats.get(chat_id)
        if chat is None:
            windows = [Window(self.per_second_in_a_chat * BURST_S, BURST_S * self.time_scale)]
            if str(chat_id).startswith(("-", "@")):  # groups and channels have negative ids
                windows.append(Window(self.per_minute_in_a_group, 60 * self.time_scale))
            chat = self._chats[chat_id] = _Chat(windows)
        return chat

    def _forget_idle(self, now: float) -> None:
        if now - self._swept_at < self._sweep_every:
            return
        self._swept_at = now
        for chat_id in [chat_id for chat_id, chat in self._chats.items() if chat.idle(now)]:
            del self._chats[chat_id]

    async def _admit(self, chat: _Chat) -> Send:
        """Wait until the chat may send (its turn, no flood wait, room in every window); count it."""
        windows = [*chat.windows, self._overall]
        async with chat.turn:
            while True:
                await chat.open.wait()
                now = time.monotonic()
                wait = max(window.wait(now) for window in windows)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            send = Send()
            for window in windows:  # no await since the check: the room is still there
                window.add(send)
            return send

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
            send = await self._admit(chat)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as flood:
                if attempt == self.max_retries:
                    raise
                wait = (seconds(flood, "retry_after") or 1.0) + 0.1
            finally:
                send.answered()
            log.warning("Telegram flood control in chat %s: waiting %.1f s before retrying", chat_id, wait)
            chat.open.clear()
            try:
                await asyncio.sleep(wait)
            finally:
                chat.open.set()
        raise AssertionError("unreachable")
