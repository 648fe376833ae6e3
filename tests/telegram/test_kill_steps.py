"""A process killed (SIGKILL) at each step of a reply to a voice note: after a restart, what the
person sees, what is stored and what is lost (the target: nothing).

Each case runs the real ``iris run telegram`` (``tests/telegram/kill_bot.py``, which dies at the
step ``KILL_AT`` names) against the fake Bot API, sends one voice note, waits for the process to
die, then starts plain ``iris run telegram`` on the same data folder and database. The inbox's
lease is short, so the restarted process takes the update over at once, as it would take over a
dead neighbour's on a shared PostgreSQL. The table in docs/deploy.md ("Faults, and what each
costs") is what these cases show. A note taken over is charged to the person's hourly limits once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from bots.telegram_bot.application import APOLOGY
from bots.telegram_bot.inbox import SET_ASIDE
from tests.conftest import _postgres_database, voice
from tests.telegram.fake_bot_api import TOKEN, FakeBotApi, Sent, private_chat, user
from tests.telegram.kill_bot import STEPS
from tests.telegram.scenario import rated_replies, turn_of

ADA = user(7, "Ada")
LAUNCHER = Path(__file__).with_name("kill_bot.py")
IRIS = str(Path(sys.executable).with_name("iris"))
REPO = Path(__file__).parents[2]
LEASE_S = 1.0
DONE = "SELECT id FROM inbox WHERE done_at IS NOT NULL"


@dataclass(frozen=True)
class Seen:
    """The chat as the person sees it once the restarted process is done."""

    transcripts: list[Sent]  # "🎤 …" quotes of what was heard
    replies: list[Sent]  # finished replies: the messages with the rating buttons
    leftovers: list[Sent]  # anything else the bot left in the chat (a reply broken off by the kill)


# Per step, what the tests measured here (docs/deploy.md's table): how many times the transcript
# is shown, how many finished replies, how many leftovers. The process taking over edits the
# messages the killed one had shown (their ids are kept in the inbox), so every step ends the same:
# one transcript, one whole reply, nothing broken off (before, a kill while streaming left the
# start of the reply and a second transcript, and a kill after showing left the reply twice).
EXPECTED: dict[str, tuple[int, int, int]] = {step: (1, 1, 0) for step in STEPS}


# Every step on SQLite; on PostgreSQL the two ways a taken-over update resumes (its turn
# unanswered: answered now; its reply stored: shown again), to keep the module near 2 minutes.
CASES = [pytest.param(step, "sqlite", id=f"sqlite-{step}") for step in STEPS] + [
    pytest.param(step, "postgres", id=f"postgres-{step}", marks=pytest.mark.postgres)
    for step in ("transcribed", "replied")
]


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite in the data folder, as ``iris run`` makes it by default, or a throwaway PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'iris.db'}"
    else:
        yield from _postgres_database()


def _env(fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path, database: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "TELEGRAM_", "DISCORD_"))}
    return {
        **inherited,
        "PYTHONPATH": str(REPO),
        # SQLite: the default database in the data folder, as a fresh install has it.
        **({} if database.startswith("sqlite") else {"DATABASE_URL": database}),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_BASE_URL": fake_api.base_url,
        "TELEGRAM_BASE_FILE_URL": fake_api.base_file_url,
        # Every piece shown, so that the reply is seen growing before it is whole (the "streaming" kill).
        "TELEGRAM_EDIT_INTERVAL_SECONDS": "0",
        "IRIS_DATA_DIR": str(tmp_path / "data"),
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_LLM_THREADS": "1",
        "IRIS_GENERATION_TEMPERATURE": "0",
        "IRIS_GENERATION_MAX_TOKENS": "24",
        "IRIS_TTS_REPLIES": "off",
        "IRIS_INBOX_LEASE_SECONDS": str(LEASE_S),  # a dead process's claim runs out at once
        "IRIS_LOG_LEVEL": "INFO",
    }


class Runs:
    """The processes of one case, each with its log."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.logs: list[Path] = []

    def start(self, command: list[str], **extra: str) -> subprocess.Popen[bytes]:
        self.logs.append(self.tmp_path / f"iris-{len(self.logs)}.log")
        with self.logs[-1].open("wb") as log:
            # cwd is the temporary directory, so no .env of the checkout is read.
            env = {**self.env, **extra}
            return subprocess.Popen(command, env=env, cwd=self.tmp_path, stdout=log, stderr=log)

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in self.logs)


async def _died(process: subprocess.Popen[bytes], runs: Runs, timeout: float = 120.0) -> None:
    started = time.monotonic()
    while process.poll() is None:
        assert time.monotonic() - started < timeout, "the process was never killed\n" + runs.tail()
        await asyncio.sleep(0.1)
    assert process.returncode == -signal.SIGKILL, runs.tail()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _seen(fake_api: FakeBotApi) -> Seen:
    chat = fake_api.chat(ADA["id"])
    replies = rated_replies(fake_api, ADA["id"])
    transcripts = [sent for sent in chat if sent.text.startswith("🎤")]
    leftovers = [sent for sent in chat if sent not in replies and sent not in transcripts]
    return Seen(transcripts, replies, leftovers)


def _words(shown: str) -> str:
    """Text without its formatting: the stored reply is Markdown, the shown one Telegram's HTML."""
    return re.sub(r"\W+", " ", shown).strip()


def _rows(database: str, sql: str) -> list[Any]:
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)).all())
    finally:
        engine.dispose()


async def _kill_and_restart(step: str, database: str, runs: Runs, fake_api: FakeBotApi) -> tuple[int, Seen]:
    """Send a voice note to a process that dies at ``step``, restart, wait until the update is done.

    Returns the voice note's message id and what the chat showed before the restart.
    """
    started = time.monotonic()
    killed = runs.start([sys.executable, str(LAUNCHER)], KILL_AT=step)
    try:
        note = fake_api.send_voice(private_chat(ADA), ADA, voice("short_story.ogg"))
        await _died(killed, runs)
        died_at = time.monotonic()
        before = _seen(fake_api)
        restarted = runs.start([IRIS, "run", "telegram"])
        try:
            # Done once the restarted process has handled the update (the dead one's shown reply counts not).
            await fake_api.wait_for(lambda: _rows(database, DONE), timeout=120)
            answered_at = time.monotonic()
            await fake_api.settle(2 * LEASE_S)  # a repeat would come within a lease or two
            assert restarted.poll() is None, runs.tail()
        finally:
            _stop(restarted)
    finally:
        _stop(killed)
    print(
        f"\n{step}: killed after {died_at - started:.1f} s, done {answered_at - died_at:.1f} s after the kill"
    )
    return note["message_id"], before


@pytest.mark.parametrize(("step", "database"), CASES, indirect=["database"])
async def test_a_reply_killed_at_each_step_arrives_whole_after_a_restart_and_is_stored_once(
    step: str, database: str, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    runs = Runs(tmp_path, _env(fake_api, tmp_path, served_gguf, database))
    note, before = await _kill_and_restart(step, database, runs, fake_api)
    seen = _seen(fake_api)
    print(
        f"before the restart {len(before.transcripts)} transcript(s), {len(before.replies)} rated,"
        f" {len(before.leftovers)} other; after: {len(seen.transcripts)}, {len(seen.replies)},"
        f" {len(seen.leftovers)} ({[sent.text for sent in seen.leftovers]})"
    )

    # What is stored: the voice note's turn once, with its transcript; the reply once, answering it.
    turns = _rows(database, "SELECT id, role, from_voice, text, error, reply_to_id FROM turns ORDER BY id")
    assert [(row.role, row.from_voice, row.error) for row in turns] == [
        ("user", True, None),
        ("assistant", False, None),
    ], turns
    asked, answer = turns
    assert asked.text and answer.text and answer.reply_to_id == asked.id
    inbox = _rows(database, "SELECT attempts, done_at, failed_at FROM inbox")
    assert [(row.attempts, row.done_at is not None, row.failed_at) for row in inbox] == [(2, True, None)], inbox

    # What the person sees: the reply, whole, with its buttons pointing to the stored reply.
    chat = fake_api.chat(ADA["id"])
    assert not [sent.text for sent in chat if sent.text in (SET_ASIDE, APOLOGY) or "Traceback" in sent.text]
    expected = EXPECTED[step]
    assert (len(seen.transcripts), len(seen.replies), len(seen.leftovers)) == expected, seen
    assert {_words(sent.text) for sent in seen.transcripts} == {_words(asked.text)}
    for reply in seen.replies:
        assert _words(reply.text) == _words(answer.text), (reply.text, answer.text)
        assert [label[0] for label, _ in reply.buttons] == ["👍", "👎", "🔁", "✏"]
        assert turn_of(reply) == answer.id
        assert reply.reply_to in (note, None)
    # What the killed process had shown was edited in place: the transcript is the same message,
    # and the reply grew (or stayed) in the message where it had begun.
    if before.transcripts:
        assert [sent.message_id for sent in seen.transcripts] == [before.transcripts[0].message_id]
    started = before.leftovers + before.replies
    if started:
        assert seen.replies[0].message_id == started[0].message_id, (before, seen)
    assert not fake_api.deleted  # a reply as long as the broken-off one: nothing to take away


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_voice_note_taken_over_after_a_kill_is_charged_once_and_not_refused(
    database: str, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    # The killed process had admitted the note and charged its seconds (and the message) to the
    # person's hour; the process taking it over must neither charge them again nor refuse the note
    # for it. One 2.5 s note fits in 4 s an hour; charged twice it would not.
    limits = {"IRIS_RATE_LIMIT_VOICE_MINUTES_PER_HOUR": str(4 / 60), "IRIS_RATE_LIMIT_MESSAGES_PER_HOUR": "5"}
    runs = Runs(tmp_path, _env(fake_api, tmp_path, served_gguf, database) | limits)
    await _kill_and_restart("transcribed", database, runs, fake_api)  # after its seconds were charged

    shown = [sent.text for sent in fake_api.chat(ADA["id"])]
    assert len(rated_replies(fake_api, ADA["id"])) == 1, shown  # answered, not refused
    charged = _rows(
        database, "SELECT kind, COUNT(*) AS n, SUM(amount) AS total FROM limit_events GROUP BY kind"
    )
    assert {row.kind: (row.n, round(row.total, 1)) for row in charged} == {
        "message": (1, 1.0),
        "voice": (1, 2.5),
    }
