"""Two ``iris run telegram`` processes on one PostgreSQL behind a round-robin front, one killed half-way.

The fake Bot API delivers by webhook and retries a delivery that fails, as Telegram does;
the front spreads the deliveries over the two processes and answers 502 for one that is
down. 100 messages from 20 people: each answered and its reply written once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import text

from storage.database import make_engine
from tests.conftest import _postgres_database
from tests.telegram.fake_bot_api import TOKEN, FakeBotApi, private_chat, user
from tests.telegram.scenario import rated_replies, turn_of

pytestmark = pytest.mark.postgres

CHATS, PER_CHAT = 20, 5
SECRET = "scale-out-test-secret"
IRIS = str(Path(sys.executable).with_name("iris"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def round_robin(backends: list[int]) -> AsyncIterator[str]:
    """A load balancer: each delivery to the next process; 502 when that one is down."""
    turn = itertools.cycle(backends)

    async def forward(request: web.Request) -> web.Response:
        body, port = await request.read(), next(turn)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{port}/hook", data=body, headers=request.headers) as answer,
            ):
                return web.Response(status=answer.status, body=await answer.read())
        except aiohttp.ClientError:
            return web.Response(status=502)

    app = web.Application()
    app.router.add_post("/hook", forward)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def finished(fake_api: FakeBotApi) -> int:
    return sum(len(rated_replies(fake_api, chat)) for chat in range(1, CHATS + 1))


async def test_two_processes_answer_each_message_once_and_in_order_with_one_killed(
    fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    database = contextlib.contextmanager(_postgres_database)()
    url = database.__enter__()
    ports = [free_port(), free_port()]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "TELEGRAM_", "DISCORD_"))}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        async with round_robin(ports) as front:
            env = {
                **inherited,
                "DATABASE_URL": url,
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "TELEGRAM_BASE_URL": fake_api.base_url,
                "TELEGRAM_BASE_FILE_URL": fake_api.base_file_url,
                "TELEGRAM_WEBHOOK_URL": front,
                "TELEGRAM_WEBHOOK_SECRET": SECRET,
                "TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1",
                "TELEGRAM_WEBHOOK_PATH": "/hook",
                "IRIS_DATA_DIR": str(tmp_path / "data"),
                "IRIS_LLM_MODEL": str(served_gguf),
                "IRIS_GENERATION_TEMPERATURE": "0",
                "IRIS_GENERATION_MAX_TOKENS": "8",
                "IRIS_LLM_PARALLEL": "2",
                "IRIS_LLM_THREADS": "1",
                "IRIS_INBOX_LEASE_SECONDS": "3",
                "IRIS_LOG_LEVEL": "INFO",
            }
            subprocess.run([IRIS, "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True)
            for n, port in enumerate(ports):
                with (tmp_path / f"iris-{n}.log").open("wb") as log:
                    processes.append(
                        subprocess.Popen(
                            [IRIS, "run", "telegram"],
                            env={**env, "TELEGRAM_WEBHOOK_PORT": str(port)},
                            cwd=tmp_path,
                            stdout=log,
                            stderr=log,
                        )
                    )
            await fake_api.wait_for(lambda: len(fake_api.calls_to("setWebhook")) >= 2, timeout=240)
            await asyncio.sleep(1)  # both webhook servers listen once setWebhook was called

            people = [user(n, f"Person {n}") for n in range(1, CHATS + 1)]
            sent: dict[int, list[int]] = {person["id"]: [] for person in people}

            def send(k: int) -> None:
                for person in people:
                    message = fake_api.send_text(private_chat(person), person, f"Message {k + 1}: say hello.")
                    sent[person["id"]].append(message["message_id"])

            for k in range(PER_CHAT // 2 + 1):  # the first half
                send(k)
            await fake_api.wait_for(lambda: finished(fake_api) >= 25, timeout=600)
            processes[0].send_signal(signal.SIGKILL)  # mid-stream, as a crashed machine would
            processes[0].wait(30)
            for k in range(PER_CHAT // 2 + 1, PER_CHAT):  # the rest: half of them reach the dead one first
                send(k)
            await fake_api.wait_for(lambda: finished(fake_api) >= CHATS * PER_CHAT, timeout=900)
            await asyncio.sleep(2 * 3)  # a double answer would come within a lease or two
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
    logs = "\n".join((tmp_path / f"iris-{n}.log").read_text()[-2000:] for n in range(2))
    try:
        assert fake_api.webhook_failures > 0, "no delivery reached the killed process: the test proved nothing"
        survivor = (tmp_path / "iris-1.log").read_text()
        assert "which a stopped process had taken" in survivor, "the survivor took nothing over"
        assert finished(fake_api) >= CHATS * PER_CHAT, logs
        engine = make_engine(url)
        with engine.connect() as connection:
            answered = dict(
                connection.execute(
                    text(
                        "SELECT q.id, count(a.id) FROM turns q LEFT JOIN turns a ON a.reply_to_id = q.id "
                        "WHERE q.role = 'user' GROUP BY q.id"
                    )
                ).all()
            )
            asked = dict(connection.execute(text("SELECT id, platform_message_id FROM turns")).all())
            replied_to = dict(connection.execute(text("SELECT id, reply_to_id FROM turns")).all())
        engine.dispose()
        assert len(answered) == CHATS * PER_CHAT and set(answered.values()) == {1}, logs  # written once each
        shown_again = 0
        for person_id, message_ids in sent.items():
            replies = [turn_of(reply) for reply in rated_replies(fake_api, person_id)]  # as the chat shows them
            # The survivor edits what the killed process had shown (its ids are in the inbox); only
            # a kill between Telegram's answer to a first send and the write of its id repeats a
            # reply, right under itself.
            shown_again += sum(earlier == later for earlier, later in itertools.pairwise(replies))
            once = [turn for n, turn in enumerate(replies) if n == 0 or turn != replies[n - 1]]
            answered_messages = [int(asked[replied_to[turn]]) for turn in once]
            assert answered_messages == message_ids, (person_id, answered_messages, message_ids)  # in order
        assert shown_again <= 2 * 2 + 4  # at most what the killed process was handling (its capacity)
    finally:
        database.__exit__(None, None, None)
