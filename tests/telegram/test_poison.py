"""Poison messages end: an update whose handling kills its process is set aside after N attempts.

Without a cap, a process that dies on an update leaves it claimed; the lease runs out, the
next process claims it and dies the same way, forever. The attempts are counted in the
database (a claim adds one), so the cap holds across processes and restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text

from bots.app import App
from bots.telegram_bot import build_application, running
from bots.telegram_bot.application import APOLOGY
from bots.telegram_bot.inbox import SET_ASIDE
from core.domain import ChatMessage, IncomingMessage, ServiceEvent
from core.ports import Generation
from storage.inbox import SqlInbox
from storage.repository import SqlStore
from tests.telegram.conftest import query, telegram_settings
from tests.telegram.fake_bot_api import TOKEN, FakeBotApi, private_chat, user
from tests.telegram.poison_bot import POISON
from tests.telegram.scenario import rated_replies, wait_for_reply, wait_for_text

ADA, BOB = user(1, "Ada"), user(2, "Bob")
MAX_ATTEMPTS = 3
LAUNCHER = Path(__file__).with_name("poison_bot.py")
REPO = Path(__file__).parents[2]


def test_an_update_out_of_attempts_is_set_aside_once_and_its_queue_goes_on(store: SqlStore) -> None:
    inbox = SqlInbox(store.engine, max_attempts=MAX_ATTEMPTS)
    inbox.put("telegram", "1", "chat:a", {"n": 1})
    inbox.put("telegram", "2", "chat:a", {"n": 2})  # the same person's next message waits behind it
    for attempt in range(1, MAX_ATTEMPTS + 1):
        (taken,) = inbox.claim("telegram", f"process-{attempt}", 0.3, 10)
        assert taken.payload == {"n": 1} and taken.attempts == attempt
        assert inbox.set_aside("telegram") == []  # its lease still runs: it may yet be answered
        time.sleep(0.4)  # the process died on it: no renewal, never done
        if attempt < MAX_ATTEMPTS:
            assert inbox.set_aside("telegram") == []  # attempts left: claimed again, not failed

    assert inbox.claim("telegram", "process-4", 30, 10) == []  # not claimed a fourth time
    with ThreadPoolExecutor(4) as pool:  # four processes look at once: one of them tells the person
        found = list(pool.map(lambda _: SqlInbox(store.engine, MAX_ATTEMPTS).set_aside("telegram"), range(4)))
    (failed,) = [item for items in found for item in items]
    assert failed.id == taken.id and failed.payload == {"n": 1} and failed.attempts == MAX_ATTEMPTS
    assert inbox.set_aside("telegram") == []

    (behind,) = inbox.claim("telegram", "process-4", 30, 10)
    assert behind.payload == {"n": 2} and behind.attempts == 1
    with store.engine.connect() as connection:
        row = connection.execute(
            text("SELECT attempts, payload, failed_at, done_at FROM inbox WHERE update_id = '1'")
        ).one()
    payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
    assert row.attempts == MAX_ATTEMPTS and row.failed_at is not None and row.done_at is not None
    assert payload == {}  # a person's words are not kept once it is set aside


def _bot_env(fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "TELEGRAM_", "DISCORD_"))}
    return {
        **inherited,
        "PYTHONPATH": str(REPO),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_BASE_URL": fake_api.base_url,
        "TELEGRAM_BASE_FILE_URL": fake_api.base_file_url,
        "IRIS_DATA_DIR": str(tmp_path / "data"),
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_LLM_PARALLEL": "2",
        "IRIS_LLM_THREADS": "1",
        "IRIS_GENERATION_TEMPERATURE": "0",
        "IRIS_GENERATION_MAX_TOKENS": "8",
        "IRIS_TTS_REPLIES": "off",
        "IRIS_INBOX_LEASE_SECONDS": "1",  # short, so that a dead process's claim runs out at once
        "IRIS_INBOX_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "IRIS_LOG_LEVEL": "INFO",
    }


async def test_a_message_that_kills_every_process_handling_it_is_set_aside_and_the_queue_goes_on(
    fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    env = _bot_env(fake_api, tmp_path, served_gguf)
    logs: list[Path] = []

    def start() -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"iris-{len(logs)}.log")
        with logs[-1].open("wb") as log:
            command = [sys.executable, str(LAUNCHER)]
            return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log)

    def tail() -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in logs)

    poison = fake_api.send_text(private_chat(ADA), ADA, POISON)
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")  # waits behind it
    deaths, started = 0, time.monotonic()
    process = start()
    try:
        while not any(sent.text == SET_ASIDE for sent in fake_api.chat(ADA["id"])):
            if process.poll() is not None:
                assert process.returncode == -signal.SIGKILL, tail()
                deaths += 1
                assert deaths <= MAX_ATTEMPTS, "the update was taken up again after its last attempt\n" + tail()
                process = start()  # as a supervisor (systemd, Kubernetes) restarts it
            assert time.monotonic() - started < 240, tail()
            await asyncio.sleep(0.2)
        await wait_for_reply(fake_api, ADA["id"], timeout=60)  # the message behind it is answered
        fake_api.send_text(private_chat(BOB), BOB, "What is the capital of France?")
        await wait_for_reply(fake_api, BOB["id"], timeout=60)  # and the next person's
        await asyncio.sleep(2 * 1)  # a process that looped on it would take it up within a lease or two
        assert process.poll() is None, tail()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    elapsed = time.monotonic() - started

    assert deaths == MAX_ATTEMPTS, tail()
    notices = [sent for sent in fake_api.chat(ADA["id"]) if sent.text == SET_ASIDE]
    assert len(notices) == 1 and notices[0].reply_to == poison["message_id"], notices
    assert "Traceback" not in " ".join(sent.text for sent in fake_api.chat(ADA["id"]))
    assert len(rated_replies(fake_api, ADA["id"])) == 1 and len(rated_replies(fake_api, BOB["id"])) == 1
    with sqlite3.connect(tmp_path / "data" / "iris.db") as connection:
        rows = connection.execute(
            "SELECT attempts, failed_at IS NOT NULL, payload FROM inbox ORDER BY id"
        ).fetchall()
    # The poisonous update is marked failed after its attempts, its words dropped; the others were answered.
    assert [(attempts, failed, json.loads(payload)) for attempts, failed, payload in rows] == [
        (MAX_ATTEMPTS, 1, {}),
        (1, 0, {}),
        (1, 0, {}),
    ], rows
    print(f"\n{deaths} processes killed, notice and both replies after {elapsed:.1f} s")


async def test_a_handler_that_raises_is_answered_with_an_apology_once_not_retried(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    # In one process, an exception is not a crash: PTB's error handler apologises and the
    # update is done, so no other process takes it up again.
    handle = app.service.replies.handle

    def raising(message: IncomingMessage) -> AsyncGenerator[ServiceEvent, None]:
        if message.text == POISON:
            raise RuntimeError("a bug met this message")
        return handle(message)

    app.service.replies.handle = raising  # type: ignore[method-assign]
    settings = telegram_settings(tmp_path, served_gguf, fake_api, inbox_lease_seconds=1.0)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(build_application(app.service, settings, app.inbox), settings))
        fake_api.send_text(private_chat(ADA), ADA, POISON)
        fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
        await wait_for_text(fake_api, ADA["id"], APOLOGY)
        await wait_for_reply(fake_api, ADA["id"])
        await asyncio.sleep(3 * 1)  # an update left unfinished would come back within a lease or two
    assert [sent.text for sent in fake_api.chat(ADA["id"])].count(APOLOGY) == 1
    assert query(app, "SELECT attempts, done_at IS NOT NULL, failed_at IS NULL FROM inbox ORDER BY id") == [
        (1, 1, 1),
        (1, 1, 1),
    ]


async def test_a_process_that_stalls_past_its_lease_handles_its_update_once(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    # The event loop blocked past the lease (a slow call that forgot to_thread): nobody renewed
    # the claim. The lease ran out, so the claim may count a second attempt, but the process
    # must not queue the update it is still handling a second time (each time stalling again,
    # until its attempts were spent and it was set aside while being answered).
    handle, handled = app.service.replies.handle, []

    def stalling(message: IncomingMessage) -> AsyncGenerator[ServiceEvent, None]:
        if message.text == POISON:
            handled.append(message.message_id)
            time.sleep(3 * 1.0)  # blocks the whole loop, the inbox's renewals too
        return handle(message)

    app.service.replies.handle = stalling  # type: ignore[method-assign]
    settings = telegram_settings(tmp_path, served_gguf, fake_api, inbox_lease_seconds=1.0)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(build_application(app.service, settings, app.inbox), settings))
        fake_api.send_text(private_chat(ADA), ADA, POISON)
        await wait_for_reply(fake_api, ADA["id"])
        await asyncio.sleep(3 * 1)  # a second handling would start within a lease or two
        await fake_api.settle()
    assert len(handled) == 1 and len(rated_replies(fake_api, ADA["id"])) == 1
    assert SET_ASIDE not in [sent.text for sent in fake_api.chat(ADA["id"])]
    ((attempts, done, kept),) = query(app, "SELECT attempts, done_at IS NOT NULL, failed_at IS NULL FROM inbox")
    assert done and kept and attempts <= 2


async def test_a_reply_whose_model_hangs_is_given_up_the_person_told_and_their_next_message_answered(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    # A live process whose model stops mid-reply (a stuck decoder, a server that stops
    # sending) keeps renewing its claim, so the inbox alone would hold the person's queue
    # for as long as the process lives. The writer gives up once nothing came for the
    # stall limit: the person is told, the turn stored as failed, the queue goes on.
    real = app.service.writer.generator
    stream = real.stream

    async def hanging(messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        if POISON not in messages[-1].content:
            async for piece in stream(messages, options):
                yield piece
            return
        yield "Let me think"
        await asyncio.Event().wait()  # never set: the model stopped writing

    real.stream = hanging  # type: ignore[method-assign]
    config = app.service.writer.config
    app.service.writer.config = replace(config, chat=replace(config.chat, stall_seconds=1.0))
    settings = telegram_settings(tmp_path, served_gguf, fake_api, inbox_lease_seconds=1.0)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(build_application(app.service, settings, app.inbox), settings))
        fake_api.send_text(private_chat(ADA), ADA, POISON)
        fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")  # waits behind it
        notice = await wait_for_text(fake_api, ADA["id"], "stopped answering")
        await wait_for_reply(fake_api, ADA["id"])
        await fake_api.settle()
    texts = [sent.text for sent in fake_api.chat(ADA["id"])]
    assert "Let me think" not in texts  # the broken-off words were replaced by the notice
    assert notice.text == "Sorry, the model stopped answering me. Please try again in a minute."
    assert SET_ASIDE not in texts and not any("Traceback" in t for t in texts)
    assert len(rated_replies(fake_api, ADA["id"])) == 1
    failed = query(app, "SELECT text, error FROM turns WHERE role = 'user' ORDER BY id")
    assert failed[0] == (POISON, notice.text) and failed[1][1] is None
    assert query(app, "SELECT done_at IS NOT NULL, failed_at IS NULL FROM inbox") == [(1, 1), (1, 1)]
