"""The per-chat rate limiter on its own: a chat is paced, a group keeps within its minute, a flood wait
holds back only its chat. Windows are shortened by ``time_scale`` to keep the tests short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from telegram.error import RetryAfter

from bots.telegram_bot.limits import BURST_S, ChatRateLimiter

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


def spans(sent: list[float], count: int) -> list[float]:
    """For each send, the time since the send ``count`` before it: a shorter window holds ``count`` at most."""
    return [later - earlier for earlier, later in zip(sent, sent[count:], strict=False)]


def recorder() -> tuple[list[float], Callable[[], Awaitable[bool]]]:
    """A send that only notes when it was called, and the list it notes into."""
    sent: list[float] = []

    async def send() -> bool:
        sent.append(time.monotonic())
        return True

    return sent, send


async def test_a_private_chat_is_paced_after_a_short_burst_and_typing_is_not() -> None:
    scale = 0.2  # a second lasts 0.2 s
    limiter = ChatRateLimiter(per_second_in_a_chat=2, time_scale=scale)
    sent, send = recorder()
    began = time.monotonic()
    for _ in range(2 * BURST_S + 2):
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 7}, None)
    assert sent[2 * BURST_S - 1] - began < 0.5  # the burst goes at once
    # then two a second: never more than BURST_S seconds' worth in any BURST_S seconds
    assert min(spans(sent, 2 * BURST_S)) >= BURST_S * scale
    typing = time.monotonic()
    for _ in range(20):
        await limiter.process_request(send, (), {}, "sendChatAction", {"chat_id": 7}, None)
    assert time.monotonic() - typing < 0.5


async def test_a_group_never_sends_more_than_its_limit_in_a_minute_even_after_a_quiet_spell() -> None:
    # A leaky bucket of 20 a minute lets 20 through at once and then refills: up to 40 in a minute.
    scale = 0.02  # a minute lasts 1.2 s
    limiter = ChatRateLimiter(per_minute_in_a_group=20, time_scale=scale)
    sent, send = recorder()
    for _ in range(30):
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": -1001234}, None)
    assert min(spans(sent, 20)) >= 60 * scale
    assert min(spans(sent, BURST_S)) >= BURST_S * scale  # and no more than about one a second


async def test_a_flood_wait_holds_back_only_its_own_chat() -> None:
    limiter = ChatRateLimiter()
    calls: list[tuple[int, float]] = []
    refused = {"left": 1}

    async def send(chat: int) -> bool:
        calls.append((chat, time.monotonic()))
        if chat == 1 and refused["left"]:
            refused["left"] -= 1
            raise RetryAfter(timedelta(seconds=1))
        return True

    began = time.monotonic()
    flooded = asyncio.create_task(
        limiter.process_request(send, (1,), {}, "editMessageText", {"chat_id": 1}, None)
    )
    await asyncio.sleep(0.1)
    assert await limiter.process_request(send, (2,), {}, "sendMessage", {"chat_id": 2}, None)
    other_done = time.monotonic() - began
    assert await flooded  # retried after the wait, not dropped
    assert other_done < 0.5  # chat 2 did not wait for chat 1's flood wait
    assert [chat for chat, _ in calls] == [1, 2, 1]
    assert calls[-1][1] - began >= 1.0


async def test_a_send_slowed_on_its_way_does_not_let_the_next_ones_bunch_up_behind_it() -> None:
    # Telegram counts a message when it arrives. A send that takes 0.15 s to get there, followed by
    # sends that arrive at once, must still arrive no more than BURST_S in any window; and sends
    # made at the same time (as a busy bot's handlers do) count while they are on their way.
    scale = 0.2  # a chat's window of BURST_S sends lasts 0.6 s
    limiter = ChatRateLimiter(per_second_in_a_chat=1, time_scale=scale)
    arrived: list[float] = []
    delays = iter([0.15, 0.0, 0.0, 0.0, 0.15, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0] * 2)

    async def send() -> bool:
        await asyncio.sleep(next(delays))
        arrived.append(time.monotonic())
        return True

    for _ in range(12):
        await limiter.process_request(send, (), {}, "editMessageText", {"chat_id": 7}, None)
    await asyncio.gather(
        *(limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 7}, None) for _ in range(12))
    )
    assert len(arrived) == 24
    assert min(spans(arrived, BURST_S)) >= BURST_S * scale


async def test_a_send_that_fails_on_its_way_frees_its_place_and_the_chat_goes_on() -> None:
    # A network drop (not a 429) ends the call with an error: the send still counts, from when it
    # failed, and never holds the chat's window as "on its way" for ever.
    scale = 0.2
    limiter = ChatRateLimiter(per_second_in_a_chat=1, time_scale=scale)
    sent, send = recorder()

    async def drop() -> bool:
        raise ConnectionError("network down")

    for _ in range(BURST_S):
        with pytest.raises(ConnectionError):
            await limiter.process_request(drop, (), {}, "sendMessage", {"chat_id": 7}, None)
    began = time.monotonic()
    assert await asyncio.wait_for(
        limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 7}, None), timeout=5
    )
    assert BURST_S * scale <= sent[0] - began + 0.05  # waited for the failed ones' window, no longer
    assert sent[0] - began < 2.0
