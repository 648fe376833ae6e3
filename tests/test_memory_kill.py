"""kill -9 between a chat approval of a correction and its indexing in the correction memory.

The claim (docs/feedback.md, ``core.feedback.FeedbackService._remember``): the approval is stored
first; a process that dies before the approved correction's wordings are embedded and indexed
leaves it approved and unindexed, and the next start indexes it (``CorrectionMemory.sync`` in
``App.warm_up``). Here a real process (``tests/kill_memory.py``) approves a correction with the
indexing step held, is killed with SIGKILL there, and a fresh app on the same database (SQLite,
PostgreSQL) starts and serves the approved answer: the correction approved once, indexed once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bots.app import App, build_app
from bots.settings import Settings
from core.domain import ChatRef, CorrectionStatus, IncomingMessage, Person, ReplyDone, Timings
from core.embedding import Embedder
from core.transcription import WhisperTranscriber
from storage.memory import SqlMemoryStore
from tests.conftest import _postgres_database, make_settings
from tests.kill_memory import REVIEWER

CHILD = Path(__file__).with_name("kill_memory.py")
REPO = Path(__file__).parents[1]
ANN = Person("telegram", "1", "Ann")  # asked, and corrected
BOB = Person("telegram", "2", "Bob")  # asks after the restart, in his own chat
QUESTION = "Who designed the Iris logo?"
ANSWER = "The Iris logo was designed by Odalys Fenwright in 2021."


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> Embedder:
    from core.embedding import default_embedder

    return default_embedder(models_dir.parent)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite in the data folder, as ``iris run`` makes it by default, or a throwaway PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'iris.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def settings(tmp_path: Path, served_gguf: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, served_gguf, database_url=database_url)


def started(settings: Settings, embedder: Embedder, transcriber: WhisperTranscriber) -> App:
    """The app as ``iris run`` starts it (``warm_up``), sharing the session's loaded models."""
    app = build_app(settings)
    app.transcriber = app.service.listener.transcriber = transcriber  # whisper loads once per session
    assert app.service.memory is not None
    app.service.memory.embedder = embedder
    app.warm_up()
    return app


def ann_corrects(app: App) -> int:
    """Ann asked, got a wrong reply and suggested the right answer; the correction's id (pending)."""
    receipt = app.store.record_user_turn(
        ChatRef("telegram", ANN.user_id),
        ANN,
        text=QUESTION,
        from_voice=False,
        message_id=None,
        shared_history=False,
    )
    reply = app.store.record_reply(receipt.conversation_id, receipt.turn_id, "Nobody knows.", "m1", Timings())
    return app.store.add_correction(ANN, reply, ANSWER)


def approve_and_die(settings: Settings, correction_id: int, tmp_path: Path) -> list[str]:
    """Approve in a child process, SIGKILL it while it indexes; the wordings it was embedding."""
    ready = tmp_path / "indexing"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "DATABASE_URL"))}
    env = {
        **inherited,
        "PYTHONPATH": str(REPO),
        "IRIS_DATA_DIR": str(settings.data_dir),
        "IRIS_LLM_MODEL": settings.llm.model,
        "DATABASE_URL": settings.database_url or "",
        "CORRECTION_ID": str(correction_id),
        "READY_FILE": str(ready),
    }
    log = tmp_path / "child.log"
    with log.open("wb") as out:  # cwd: the temporary folder, so no .env of the checkout is read
        child = subprocess.Popen([sys.executable, str(CHILD)], env=env, cwd=tmp_path, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, f"the child ended before indexing:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the child never reached the indexing:\n{log.read_text()}"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return ready.read_text().splitlines()


def memory_rows(app: App, correction_id: int) -> list[tuple[str, str]]:
    """The correction's entries in the memory table: (wording, "own", "negative" or "answer"), every model."""
    with app.store.engine.connect() as connection:
        query = text(
            "SELECT wording, negative, is_answer FROM correction_memory WHERE correction_id = :id ORDER BY id"
        )
        return [
            (wording, "answer" if is_answer else "negative" if negative else "own")
            for wording, negative, is_answer in connection.execute(query, {"id": correction_id})
        ]


async def ask(app: App, person: Person, question: str) -> ReplyDone:
    message = IncomingMessage(ChatRef("telegram", person.user_id), person, text=question)
    [done] = [event async for event in app.service.replies.handle(message) if isinstance(event, ReplyDone)]
    return done


async def test_an_approval_killed_before_indexing_is_indexed_once_at_the_next_start(
    settings: Settings, embedder: Embedder, transcriber: WhisperTranscriber, tmp_path: Path
) -> None:
    before = build_app(settings)
    try:
        correction_id = ann_corrects(before)
    finally:
        before.close()

    wordings = approve_and_die(settings, correction_id, tmp_path)

    # Killed between the two steps: the approval was stored, the wordings were not.
    assert wordings[0] == QUESTION and len(wordings) > 1  # the question and its rule-made rewordings
    dead = build_app(settings)  # not started: nothing indexed yet
    try:
        [approved] = dead.store.corrections(CorrectionStatus.APPROVED)
        assert (approved.id, approved.text, approved.reviewer) == (correction_id, ANSWER, REVIEWER)
        assert memory_rows(dead, correction_id) == []
    finally:
        dead.close()

    first = started(settings, embedder, transcriber)
    try:
        # The start indexed them, before anyone asked: every wording once.
        indexed = memory_rows(first, correction_id)
        # What was being embedded: its wordings, its contrast questions, then the answer (core.memory).
        own = [wording for wording, kind in indexed if kind == "own"]
        others = [wording for wording, kind in indexed if kind == "negative"]
        assert own == wordings[: len(own)] and others and set(others) <= set(wordings[len(own) : -1])
        assert [wording for wording, kind in indexed if kind == "answer"] == [ANSWER] == wordings[-1:]
        reply = await ask(first, BOB, "who designed the logo of Iris?")
        assert reply.text == ANSWER and reply.memory == (correction_id, "served")
    finally:
        first.close()

    # A second start finds nothing to index and adds nothing.
    second = build_app(settings)
    try:
        assert second.service.memory is not None
        second.service.memory.embedder = embedder
        assert second.service.memory.sync() == 0
        assert memory_rows(second, correction_id) == indexed
        assert SqlMemoryStore(second.store.engine).unindexed_corrections(embedder.name) == []
        assert [c.id for c in second.store.corrections(CorrectionStatus.APPROVED)] == [correction_id]
    finally:
        second.close()
