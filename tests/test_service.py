"""The whole message path through the real service: real whisper, real llama.cpp, real SQLite."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bots.app import App
from core.admin import RetrainBusy
from core.domain import (
    Audio,
    ChatMessage,
    ChatRef,
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    RatingOutcome,
    ReplyDelta,
    ReplyDone,
    Role,
    ServiceEvent,
    Transcribed,
)
from core.feedback import UnknownReply
from core.ports import Generation
from core.service import ChatService
from storage.repository import SqlStore
from tests.conftest import make_settings, voice
from tests.fakes import HeldRetrainer

ALICE = Person("test", "alice", "Alice")
BOB = Person("test", "bob", "Bob")
CHAT = ChatRef("test", "chat-1")


def voice_message(name: str, message_id: str | None = None, person: Person = ALICE) -> IncomingMessage:
    return IncomingMessage(CHAT, person, audio=Audio(voice(name), "audio/ogg", name), message_id=message_id)


def text_message(
    text: str, message_id: str | None = None, chat: ChatRef = CHAT, sender: Person = ALICE
) -> IncomingMessage:
    return IncomingMessage(chat, sender, text=text, message_id=message_id)


async def collect(service: ChatService, message: IncomingMessage) -> list[ServiceEvent]:
    return [event async for event in service.replies.handle(message)]


def user_turns(store: SqlStore) -> list[tuple[str | None, bool, str | None]]:
    from sqlalchemy import select

    from storage.tables import TurnRow

    with store.engine.connect() as connection:
        rows = connection.execute(
            select(TurnRow.text, TurnRow.from_voice, TurnRow.error)
            .where(TurnRow.role == "user")
            .order_by(TurnRow.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_voice_note_is_heard_answered_and_stored(app: App) -> None:
    events = await collect(app.service, voice_message("capital_of_france.ogg", "m1"))

    heard = events[0]
    assert isinstance(heard, Transcribed) and heard.text == "What is the capital of France?"
    deltas = [e for e in events if isinstance(e, ReplyDelta)]
    done = events[-1]
    assert isinstance(done, ReplyDone)
    assert len(deltas) > 3  # streamed, not delivered in one piece
    assert deltas[-1].text.strip() == done.text
    assert done.text.strip()
    assert done.model == "smollm2-135m-instruct-f16"

    reply = app.store.get_turn(done.turn_id)
    assert reply is not None and reply.role is Role.ASSISTANT and reply.text == done.text
    assert reply.model_version == done.model
    assert reply.timings.transcribe_ms and reply.timings.generate_ms and reply.timings.tokens
    assert reply.timings.total_ms and reply.timings.total_ms >= reply.timings.generate_ms
    assert user_turns(app.store) == [("What is the capital of France?", True, None)]


async def test_the_conversation_continues_and_reset_starts_over(app: App) -> None:
    first = await collect(app.service, text_message("My name is Alice."))
    second = await collect(app.service, text_message("What is my name?"))
    assert isinstance(first[-1], ReplyDone) and isinstance(second[-1], ReplyDone)
    first_turn = app.store.get_turn(first[-1].turn_id)
    second_turn = app.store.get_turn(second[-1].turn_id)
    assert first_turn and second_turn and first_turn.conversation_id == second_turn.conversation_id
    assert await app.service.privacy.reset(CHAT, ALICE)
    third = await collect(app.service, text_message("Hello"))
    third_turn = app.store.get_turn(third[-1].turn_id)  # type: ignore[union-attr]
    assert third_turn and third_turn.conversation_id != first_turn.conversation_id


async def test_a_redelivered_message_is_answered_once(app: App) -> None:
    first = await collect(app.service, text_message("Hi there", "same-id"))
    again = await collect(app.service, text_message("Hi there", "same-id"))
    assert isinstance(first[-1], ReplyDone)
    assert [type(e) for e in again] == [Notice] and again[0].kind is NoticeKind.DUPLICATE  # type: ignore[union-attr]
    assert len(user_turns(app.store)) == 1


async def test_a_message_taken_over_after_its_reply_was_stored_shows_that_reply_without_writing_another(
    app: App,
) -> None:
    """A process stopped between storing the reply and showing it whole: the next one shows it."""
    first = await collect(app.service, text_message("Hi there", "same-id"))
    stored = first[-1]
    assert isinstance(stored, ReplyDone)
    generated = app.generator
    app.service.writer.generator = FailingGenerator()  # nothing is written this time
    taken_over = replace(text_message("Hi there", "same-id"), redelivered=True)
    again = await collect(app.service, taken_over)
    app.service.writer.generator = generated
    assert [(type(e), e.turn_id, e.text, e.model) for e in again] == [  # type: ignore[union-attr]
        (ReplyDone, stored.turn_id, stored.text, stored.model)
    ]
    assert len(user_turns(app.store)) == 1


@pytest.mark.parametrize(
    ("audio", "kind", "says"),
    [
        (lambda: voice("silence.ogg"), NoticeKind.NOTHING_HEARD, "didn't hear any speech"),
        (lambda: b"not audio at all" * 100, NoticeKind.UNREADABLE_AUDIO, "could not read that audio"),
        (
            lambda: voice("capital_of_france.ogg")[:200],
            NoticeKind.UNREADABLE_AUDIO,
            "could not read that audio",
        ),
        (lambda: b"", NoticeKind.UNREADABLE_AUDIO, "empty"),
    ],
    ids=["silence", "not-audio", "corrupt", "empty"],
)
async def test_bad_audio_gets_a_clear_answer_and_the_turn_is_kept(app: App, audio, kind, says) -> None:  # type: ignore[no-untyped-def]
    message = IncomingMessage(CHAT, ALICE, audio=Audio(audio(), "audio/ogg"), message_id="bad-1")
    events = await collect(app.service, message)
    assert len(events) == 1 and isinstance(events[0], Notice)
    assert events[0].kind is kind and says in events[0].text
    ((text, from_voice, error),) = user_turns(app.store)
    assert from_voice and text is None and error == events[0].text
    # ...and the bot still answers the next message.
    assert isinstance((await collect(app.service, text_message("Hello")))[-1], ReplyDone)


async def test_audio_over_the_duration_limit_is_refused_with_the_limit(
    tmp_path: Path, served_gguf: Path, transcriber
) -> None:  # type: ignore[no-untyped-def]
    from bots.app import build_app

    app = build_app(make_settings(tmp_path, served_gguf, chat_max_audio_seconds=1))
    app.service.listener.transcriber = transcriber
    events = await collect(app.service, voice_message("capital_of_france.ogg"))
    app.close()
    assert len(events) == 1 and isinstance(events[0], Notice) and events[0].kind is NoticeKind.TOO_LONG
    assert "up to 1 s" in events[0].text
    ((_, from_voice, error),) = user_turns(app.store)
    assert from_voice and error == events[0].text


async def test_a_file_over_the_size_limit_is_refused(app: App) -> None:
    service = ChatService(
        app.store,
        app.transcriber,
        app.generator,
        replace(app.service.config, chat=replace(app.service.config.chat, max_file_mb=0.001)),
    )
    events = await collect(service, voice_message("capital_of_france.ogg"))
    assert [e.kind for e in events if isinstance(e, Notice)] == [NoticeKind.TOO_LARGE]
    assert "limit" in events[0].text  # type: ignore[union-attr]


async def test_an_overlong_text_is_refused_but_stored(app: App) -> None:
    events = await collect(app.service, text_message("word " * 5000))
    assert isinstance(events[0], Notice) and events[0].kind is NoticeKind.TOO_LONG
    assert user_turns(app.store)[0][2] == events[0].text


async def test_a_message_holding_what_no_database_stores_is_answered_and_kept(app: App) -> None:
    """Undecodable bytes typed into ``iris chat`` or a forged ``"\\ud800"`` reach the service as lone
    surrogates, and PostgreSQL refuses a NUL: the message is stored and answered with U+FFFD in
    their place, not refused."""
    sender = Person("test", "carol", "Carol \udcff")
    events = await collect(app.service, text_message("What is the capital\0 of \udcc3France?", sender=sender))
    done = events[-1]
    assert isinstance(done, ReplyDone) and done.text.strip(), events
    assert user_turns(app.store) == [("What is the capital\ufffd of \ufffdFrance?", False, None)]
    assert app.store.get_turn(done.turn_id).text == done.text  # type: ignore[union-attr]


async def test_a_database_that_refuses_a_message_keeps_the_persons_words_out_of_the_log(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """The error of a refused statement used to carry its values, the person's message among them,
    into the log, where neither /forget nor retention reaches."""
    from sqlalchemy import text

    with app.store.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON turns BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
            )
        )
    with caplog.at_level(logging.ERROR):
        events = await collect(app.service, text_message("My bank PIN is 4921, remember it"))
    assert [event.kind for event in events if isinstance(event, Notice)] == [NoticeKind.STORE_FAILED]
    assert "could not store an incoming message" in caplog.text and "disk I/O error" in caplog.text
    assert "4921" not in caplog.text and "remember it" not in caplog.text


class FailingGenerator:
    """A model that breaks mid-reply, like a corrupt GGUF or an out-of-memory error."""

    model_name = "broken"
    context_tokens = 2048

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        yield "Half a"
        raise RuntimeError("llama_decode returned -3")


async def test_a_failing_model_gets_an_apology_and_loses_nothing(app: App) -> None:
    service = ChatService(app.store, app.transcriber, FailingGenerator(), app.service.config)
    events = await collect(service, voice_message("capital_of_france.ogg"))
    assert isinstance(events[0], Transcribed)
    notice = events[-1]
    assert isinstance(notice, Notice) and notice.kind is NoticeKind.MODEL_FAILED
    assert "llama_decode" not in notice.text and "Traceback" not in notice.text
    assert user_turns(app.store) == [("What is the capital of France?", True, notice.text)]
    assert app.store.stats().replies == 0


async def test_ratings_and_corrections_go_to_the_reply(app: App) -> None:
    done = (await collect(app.service, text_message("Who maintains the Iris bot?")))[-1]
    assert isinstance(done, ReplyDone)
    assert await app.service.feedback.rate(ALICE, done.turn_id, up=True) is RatingOutcome.CREATED
    assert await app.service.feedback.rate(ALICE, done.turn_id, up=False) is RatingOutcome.CHANGED
    correction = await app.service.feedback.correct(ALICE, done.turn_id, "Ada Lovelace maintains it.")
    (pending,) = await app.service.feedback.pending_corrections()
    assert pending.id == correction and pending.original_reply == done.text
    assert pending.prompt == "Who maintains the Iris bot?"
    question = done.turn_id - 1
    with pytest.raises(UnknownReply):
        await app.service.feedback.rate(ALICE, question, up=True)  # a person's own message is not a reply
    with pytest.raises(UnknownReply):
        await app.service.feedback.correct(ALICE, 10_000, "x")


async def test_forget_removes_the_person(app: App) -> None:
    await collect(app.service, voice_message("greeting.ogg"))
    report = await app.service.privacy.forget(ALICE)
    assert report.turns == 2 and report.conversations == 1
    stats = await app.service.admin.stats()
    assert (stats.people, stats.user_turns, stats.replies) == (0, 0, 0)


class GatedGenerator:
    """Yields one piece, then holds the reply until the test opens the gate."""

    model_name = "gated"
    context_tokens = 2048

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        self.started.append(messages[-1].content)
        yield "thinking"
        await asyncio.wait_for(self.gate.wait(), 30)  # a TimeoutError if the test never opens it
        yield " done."


async def test_the_event_loop_answers_ratings_while_a_reply_is_generated(app: App) -> None:
    earlier = (await collect(app.service, text_message("Hello")))[-1]
    assert isinstance(earlier, ReplyDone)
    gated = GatedGenerator()
    service = ChatService(app.store, app.transcriber, gated, app.service.config)
    replies = service.replies.handle(text_message("Tell me a story"))
    first = await anext(replies)
    assert isinstance(first, ReplyDelta)
    # The model is busy in its worker thread; the loop still serves the rest.
    assert await service.feedback.rate(ALICE, earlier.turn_id, up=True) is RatingOutcome.CREATED
    assert (await service.admin.stats()).user_turns == 2
    gated.gate.set()
    rest = [event async for event in replies]
    assert isinstance(rest[-1], ReplyDone) and rest[-1].text == "thinking done."


async def test_notes_being_transcribed_leave_the_default_threads_to_the_database(app: App) -> None:
    """Eight notes held inside whisper at once (a batch) and a loop with only two default threads:
    a rating (a database call on those threads) is still stored while they are held."""
    held, release = threading.Semaphore(0), threading.Event()
    real = app.transcriber

    class HeldTranscriber:
        def decode(self, audio: bytes, max_seconds: float) -> Any:
            return real.decode(audio, max_seconds)

        def transcribe(self, audio: Any) -> Any:
            held.release()
            release.wait(60)
            return real.transcribe(audio)

    earlier = (await collect(app.service, text_message("Hello")))[-1]
    assert isinstance(earlier, ReplyDone)
    batch = replace(app.service.config, parallel_transcripts=8)
    service = ChatService(app.store, HeldTranscriber(), app.generator, batch)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(2))
    people = [Person("test", f"p{n}", f"P{n}") for n in range(8)]
    notes = [asyncio.create_task(collect(service, voice_message("greeting.ogg", person=p))) for p in people]
    try:
        with ThreadPoolExecutor(1) as waiter:  # not the default threads this test is about
            for _ in range(8):  # all eight inside whisper's transcribe at once
                assert await loop.run_in_executor(waiter, held.acquire, True, 30)
        rating = service.feedback.rate(ALICE, earlier.turn_id, up=True)
        assert await asyncio.wait_for(rating, 30) is RatingOutcome.CREATED
    finally:
        release.set()
    for events in await asyncio.gather(*notes):
        assert isinstance(events[-1], ReplyDone)


async def test_a_transcription_that_never_ends_is_given_up_and_the_next_note_heard(app: App) -> None:
    """whisper stuck on a note (a thread that never returns): after the stall limit the person
    is told, the turn is stored as failed, and the next note is transcribed and answered."""
    stuck, real = threading.Event(), app.transcriber

    class StuckOnce:
        calls = 0

        def decode(self, audio: bytes, max_seconds: float) -> Any:
            return real.decode(audio, max_seconds)

        def transcribe(self, audio: Any) -> Any:
            StuckOnce.calls += 1
            if StuckOnce.calls == 1:
                stuck.wait(30)  # released at the end of the test, as a stuck thread never is
            return real.transcribe(audio)

    config = app.service.config
    stalling = replace(config, chat=replace(config.chat, stall_seconds=1.0), parallel_transcripts=2)
    service = ChatService(app.store, StuckOnce(), app.generator, stalling)  # type: ignore[arg-type]
    try:
        first = await asyncio.wait_for(collect(service, voice_message("greeting.ogg", "m1")), 20)
        second = await asyncio.wait_for(collect(service, voice_message("capital_of_france.ogg", "m2")), 60)
    finally:
        stuck.set()
    (notice,) = first
    assert isinstance(notice, Notice) and notice.kind is NoticeKind.MODEL_FAILED
    assert "Traceback" not in notice.text and "transcribe" not in notice.text
    assert isinstance(second[0], Transcribed) and isinstance(second[-1], ReplyDone)
    assert user_turns(app.store) == [(None, True, notice.text), ("What is the capital of France?", True, None)]


async def test_waiting_people_are_served_round_robin(app: App) -> None:
    gated = GatedGenerator()
    one_at_a_time = replace(app.service.config, parallel_replies=1)
    service = ChatService(app.store, app.transcriber, gated, one_at_a_time)
    chat_a, chat_b = ChatRef("test", "A"), ChatRef("test", "B")
    first = service.replies.handle(text_message("a1", chat=chat_a))
    await anext(first)  # a1 holds the model
    tasks = []
    for text, chat, sender in [("a2", chat_a, ALICE), ("a3", chat_b, ALICE), ("b1", chat_a, BOB)]:
        tasks.append(asyncio.create_task(collect(service, text_message(text, chat=chat, sender=sender))))
        while service.replies.waiting_for_model < len(tasks):  # queued in this order
            await asyncio.sleep(0.01)
    gated.gate.set()
    [event async for event in first]
    await asyncio.gather(*tasks)
    assert gated.started == ["a1", "a2", "b1", "a3"]


async def test_a_person_over_their_share_of_waiting_messages_is_asked_to_wait(app: App) -> None:
    gated = GatedGenerator()
    config = replace(
        app.service.config, parallel_replies=1, chat=replace(app.service.config.chat, max_queued_per_person=2)
    )
    service = ChatService(app.store, app.transcriber, gated, config)
    first = service.replies.handle(text_message("one", chat=ChatRef("test", "A")))
    await anext(first)  # being written
    second = asyncio.create_task(collect(service, text_message("two", chat=ChatRef("test", "B"))))
    while service.replies.waiting_for_model < 1:
        await asyncio.sleep(0.01)

    (refused,) = await collect(service, text_message("three", chat=ChatRef("test", "C")))
    assert isinstance(refused, Notice) and refused.kind is NoticeKind.TOO_MANY_WAITING
    assert "your last 2 messages" in refused.text
    bobs = asyncio.create_task(collect(service, text_message("mine", chat=ChatRef("test", "D"), sender=BOB)))
    while service.replies.waiting_for_model < 2:  # someone else is not refused: Bob waits his turn
        await asyncio.sleep(0.01)
    gated.gate.set()
    [event async for event in first]
    assert isinstance((await second)[-1], ReplyDone) and isinstance((await bobs)[-1], ReplyDone)
    assert [text for text, _, _ in user_turns(app.store)] == ["one", "two", "mine"]  # "three" was not kept
    after = await collect(service, text_message("three again", chat=ChatRef("test", "C")))
    assert isinstance(after[-1], ReplyDone)  # once answered, the person may send again


async def test_one_retrain_at_a_time_and_the_bot_keeps_answering(app: App) -> None:
    retrainer = HeldRetrainer()
    service = ChatService(app.store, app.transcriber, app.generator, app.service.config, retrainer)
    running = asyncio.create_task(service.admin.retrain("cpu-tiny"))
    while not retrainer.profiles:
        await asyncio.sleep(0.01)
    with pytest.raises(RetrainBusy):
        await service.admin.retrain()
    assert isinstance((await collect(service, text_message("Hello")))[-1], ReplyDone)
    retrainer.release.set()
    outcome = await running
    assert outcome.promoted and outcome.model == "iris-ft-1" and retrainer.profiles == ["cpu-tiny"]


async def test_retrain_without_a_retrainer_says_so(app: App) -> None:
    service = ChatService(app.store, app.transcriber, app.generator, app.service.config)
    outcome = await service.admin.retrain()
    assert not outcome.ok and "not set up" in outcome.summary


async def test_an_adapter_that_stops_listening_frees_the_model(app: App) -> None:
    gated = GatedGenerator()
    service = ChatService(app.store, app.transcriber, gated, app.service.config)
    replies = service.replies.handle(text_message("Tell me a story"))
    assert isinstance(await anext(replies), ReplyDelta)
    gated.gate.set()
    await replies.aclose()  # e.g. the chat was deleted mid-reply
    done = (await collect(service, text_message("Hello")))[-1]
    assert isinstance(done, ReplyDone) and service.replies.waiting_for_model == 0
    assert [error for _, _, error in user_turns(app.store)] == [None, None]


async def test_a_cancelled_adapter_task_frees_the_model_cleanly(app: App) -> None:
    gated = GatedGenerator()
    service = ChatService(app.store, app.transcriber, gated, app.service.config)
    listening = asyncio.create_task(collect(service, text_message("Tell me a story")))
    while not gated.started:
        await asyncio.sleep(0.01)
    listening.cancel()  # e.g. the bot shutting down mid-reply
    gated.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await listening
    done = (await collect(service, text_message("Hello")))[-1]
    assert isinstance(done, ReplyDone) and service.replies.waiting_for_model == 0
    assert [error for _, _, error in user_turns(app.store)] == [None, None]


async def test_a_locked_database_gets_a_clear_answer(app: App, tmp_path: Path) -> None:
    """Another writer holds SQLite's lock past the busy timeout: the person is told, nothing crashes."""
    import sqlite3

    from storage.database import make_engine

    path = Path(app.settings.data_dir) / "iris.db"
    impatient = SqlStore(
        make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2, "check_same_thread": False})
    )
    service = ChatService(impatient, app.transcriber, app.generator, app.service.config)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        events = await collect(service, text_message("Hello?"))
    finally:
        holder.rollback()
        holder.close()
        impatient.engine.dispose()
    assert len(events) == 1 and isinstance(events[0], Notice) and events[0].kind is NoticeKind.STORE_FAILED
    assert "could not save your message" in events[0].text
    assert isinstance((await collect(app.service, text_message("Hello?")))[-1], ReplyDone)  # and it recovers
