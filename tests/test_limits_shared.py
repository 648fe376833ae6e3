"""The per-person limits hold across processes and restarts, and the per-chat send limiter stays small.

Two ``App`` instances built from the same settings on one database are two ``iris run``
processes as far as the limits can tell: nothing is shared between them but the database.
Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bots.app import App, build_app
from bots.telegram_bot.limits import BURST_S, ChatRateLimiter
from core.domain import (
    Audio,
    ChatRef,
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    RatingOutcome,
    ReplyDone,
    ServiceEvent,
)
from core.feedback import FeedbackLimited
from core.generation import LlamaGenerator
from core.limits import RateLimiter, RateLimits
from core.transcription import WhisperTranscriber
from storage.database import make_engine
from storage.limits import SqlLimitLedger
from storage.repository import SqlStore
from tests.conftest import make_settings, voice
from tests.test_service import GatedGenerator

ADA = Person("telegram", "31", "Ada")
BOB = Person("telegram", "32", "Bob")
ADMIN = Person("telegram", "900", "Grace")

Processes = Callable[[], App]


@contextmanager
def processes(
    tmp_path: Path,
    served_gguf: Path,
    database_url: str,
    transcriber: WhisperTranscriber,
    generator: LlamaGenerator,
    **overrides: Any,
) -> Iterator[Processes]:
    """Start as many Apps on one database as the test asks for; all are closed at the end."""
    settings = make_settings(
        tmp_path, served_gguf, database_url=database_url, admin_user_ids=[ADMIN.user_id], **overrides
    )
    with ExitStack() as stack:

        def start() -> App:
            app = build_app(settings)
            app.service.listener.transcriber = transcriber  # the models load once per test session
            app.service.writer.generator = generator
            stack.callback(app.close)
            return app

        yield start


def message(
    person: Person, text: str | None = None, audio: str | None = None, **fields: Any
) -> IncomingMessage:
    return IncomingMessage(
        ChatRef(person.platform, person.user_id),
        person,
        text=text,
        audio=Audio(voice(audio), "audio/ogg") if audio else None,
        **fields,
    )


async def last_event(app: App, incoming: IncomingMessage) -> ServiceEvent:
    events = [
        event async for event in app.service.replies.handle(incoming) if isinstance(event, ReplyDone | Notice)
    ]
    return events[-1]


def user_turns(app: App) -> int:
    return app.store.stats().user_turns


def stored(app: App, sql: str) -> list[tuple[Any, ...]]:
    with app.store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


async def test_two_processes_share_one_hour_of_messages_and_a_restart_keeps_it(
    tmp_path: Path,
    served_gguf: Path,
    database_url: str,
    transcriber: WhisperTranscriber,
    generator: LlamaGenerator,
) -> None:
    with processes(
        tmp_path, served_gguf, database_url, transcriber, generator, rate_limit_messages_per_hour=3
    ) as start:
        one, two = start(), start()
        assert isinstance(await last_event(one, message(ADA, "What is the capital of France?")), ReplyDone)
        assert isinstance(await last_event(one, message(ADA, "And of Spain?")), ReplyDone)
        assert isinstance(await last_event(two, message(ADA, "And of Italy?")), ReplyDone)

        refused = await last_event(two, message(ADA, "And of Germany?"))
        assert isinstance(refused, Notice) and refused.kind is NoticeKind.RATE_LIMITED
        assert refused.text.startswith("You have sent me 3 messages in the last hour, my limit per person.")
        assert "Please come back in" in refused.text
        assert user_turns(two) == 3  # the refused message was not stored

        # A restart: a new process, with nothing in memory but what it reads from the database.
        restarted = start()
        again = await last_event(restarted, message(ADA, "And of Germany?"))
        assert isinstance(again, Notice) and again.kind is NoticeKind.RATE_LIMITED
        for text in ("What is the capital of France?", "And of Spain?", "And of Italy?", "And of Germany?"):
            assert isinstance(await last_event(restarted, message(ADMIN, text)), ReplyDone)  # admins are exempt
        assert user_turns(restarted) == 7


async def test_presses_corrections_and_voice_minutes_are_counted_across_processes(
    tmp_path: Path,
    served_gguf: Path,
    database_url: str,
    transcriber: WhisperTranscriber,
    generator: LlamaGenerator,
) -> None:
    with processes(
        tmp_path,
        served_gguf,
        database_url,
        transcriber,
        generator,
        rate_limit_presses_per_hour=2,
        rate_limit_corrections_per_hour=1,
        # The fixture voice note lasts about two seconds: one fits in 0.05 minutes (3 s), two do not.
        rate_limit_voice_minutes_per_hour=0.05,
    ) as start:
        one, two = start(), start()
        reply = await last_event(one, message(ADA, audio="capital_of_france.ogg"))
        assert isinstance(reply, ReplyDone)
        over = await last_event(two, message(ADA, audio="capital_of_france.ogg"))
        assert isinstance(over, Notice) and over.kind is NoticeKind.RATE_LIMITED
        assert over.text.startswith("That would take you over 0.05 minutes of voice in an hour")

        chat = ChatRef(ADA.platform, ADA.user_id)
        assert await one.service.feedback.rate(ADA, reply.turn_id, True, chat) is RatingOutcome.CREATED
        assert await two.service.feedback.rate(ADA, reply.turn_id, False, chat) is RatingOutcome.CHANGED
        with pytest.raises(FeedbackLimited) as pressed:
            await start().service.feedback.rate(ADA, reply.turn_id, True, chat)
        assert str(pressed.value).startswith(
            "You have pressed 👍/👎 2 times in the last hour, my limit per person."
        )
        assert stored(one, "SELECT value FROM ratings") == [(-1,)]  # the third press changed nothing

        await one.service.feedback.correct(ADA, reply.turn_id, "Paris is the capital of France.", chat)
        with pytest.raises(FeedbackLimited) as corrected:
            await two.service.feedback.correct(ADA, reply.turn_id, "Paris, on the Seine.", chat)
        assert str(corrected.value).startswith("You have sent me 1 better answer in the last hour")
        assert [c.text for c in one.store.corrections()] == ["Paris is the capital of France."]


async def test_the_cap_on_waiting_messages_holds_across_processes(
    tmp_path: Path,
    served_gguf: Path,
    database_url: str,
    transcriber: WhisperTranscriber,
    generator: LlamaGenerator,
) -> None:
    with processes(
        tmp_path, served_gguf, database_url, transcriber, generator, chat_max_queued_per_person=1
    ) as start:
        one, two = start(), start()
        gated = GatedGenerator()
        one.service.writer.generator = gated
        writing = one.service.replies.handle(message(ADA, "Tell me a story"))
        await anext(writing)  # stored, and being written in the first process

        refused = await last_event(two, message(ADA, "And another one"))
        assert isinstance(refused, Notice) and refused.kind is NoticeKind.TOO_MANY_WAITING
        assert "your last message" in refused.text
        assert isinstance(await last_event(two, message(BOB, "Hello")), ReplyDone)  # someone else is answered

        gated.gate.set()
        assert isinstance([event async for event in writing][-1], ReplyDone)
        assert isinstance(await last_event(two, message(ADA, "And another one")), ReplyDone)
        assert user_turns(two) == 3  # the refused message was not stored


async def test_a_message_taken_over_from_a_stopped_process_is_not_refused_by_its_own_count(
    tmp_path: Path,
    served_gguf: Path,
    database_url: str,
    transcriber: WhisperTranscriber,
    generator: LlamaGenerator,
) -> None:
    with processes(
        tmp_path,
        served_gguf,
        database_url,
        transcriber,
        generator,
        rate_limit_messages_per_hour=1,
        chat_max_queued_per_person=1,
    ) as start:
        stopped, taker = start(), start()
        chat = ChatRef(ADA.platform, ADA.user_id)
        # What a process that stopped while answering left behind: the turn stored and counted, no reply.
        stopped.store.record_user_turn(
            chat,
            ADA,
            text="What is the capital of France?",
            from_voice=False,
            message_id="7",
            shared_history=False,
        )
        stopped.service.replies.limiter.note_message(ADA)

        fresh = await last_event(taker, message(ADA, "And of Spain?", message_id="8"))
        assert isinstance(fresh, Notice) and fresh.kind is NoticeKind.RATE_LIMITED
        taken_over = message(ADA, "What is the capital of France?", message_id="7", redelivered=True)
        assert isinstance(await last_event(taker, taken_over), ReplyDone)


def test_presses_at_the_same_moment_in_two_processes_take_the_limit_exactly(
    store: SqlStore, database_url: str
) -> None:
    other = make_engine(database_url)  # the second process's own connections
    limiters = [
        RateLimiter(RateLimits(presses_per_hour=5), ledger=SqlLimitLedger(e)) for e in (store.engine, other)
    ]
    try:
        with ThreadPoolExecutor(8) as pool:
            verdicts = list(pool.map(lambda n: limiters[n % 2].take_press(ADA), range(24)))
    finally:
        other.dispose()
    assert sum(verdict is None for verdict in verdicts) == 5
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM limit_events")).scalar_one() == 5


async def test_the_send_limiter_forgets_chats_gone_quiet_and_still_paces_an_active_one() -> None:
    scale = 0.01  # a second lasts 10 ms: a group's minute 0.6 s
    limiter = ChatRateLimiter(per_second_in_a_chat=1, time_scale=scale)
    sent: list[float] = []

    async def send() -> bool:
        sent.append(time.monotonic())
        return True

    for chat_id in [*range(1, 301), *range(-1001, -1301, -1)]:  # 300 private chats and 300 groups
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": chat_id}, None)
    await asyncio.sleep(1.0)  # longer than the longest window (a group's minute, with its margin)

    sent.clear()
    for _ in range(10):  # a burst of BURST_S seconds' worth, then one a second
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 5}, None)
    assert limiter.chats == 1  # only the chat still sending is kept
    # Never more than BURST_S sends in any BURST_S seconds.
    assert all(later - earlier >= BURST_S * scale for earlier, later in zip(sent, sent[BURST_S:], strict=False))
