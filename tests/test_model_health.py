"""A model file that cannot load never replaces one that can (issue 24).

The damage is real: a copy of the served GGUF cut to half its length, as a full
disk or an interrupted copy leaves it. The CLI runs as a person runs it (a real
process); the hot swap runs through the real service, llama.cpp and database.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bots.app import App, build_app
from bots.render import format_stats
from core.domain import ChatRef, IncomingMessage, Notice, NoticeKind, Person, ReplyDone, Role
from core.generation import LlamaGenerator, LoadBackoff
from core.model_check import ModelUnloadable, check_gguf
from core.transcription import WhisperTranscriber
from finetune.gate import GateFailure, check_servable
from storage.repository import SqlStore
from tests.conftest import make_settings
from tests.test_cli import iris, stored

ALICE = Person("test", "alice", "Alice")
CHAT = ChatRef("test", "health")


def truncated_copy(source: Path, target: Path) -> Path:
    """``source`` cut to half its length at ``target``."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def cli_env(tmp_path: Path, served_gguf: Path, **more: str) -> dict[str, str]:
    """The environment ``iris`` runs in, as in tests/test_cli.py."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE_URL"))
    }
    return {**clean, "IRIS_DATA_DIR": str(tmp_path / "data"), "IRIS_LLM_MODEL": str(served_gguf), **more}


@pytest.fixture
def env(tmp_path: Path, served_gguf: Path) -> dict[str, str]:
    return cli_env(tmp_path, served_gguf, IRIS_GENERATION_MAX_TOKENS="48")


def one_line_refusal(result: subprocess.CompletedProcess[str], starts: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


# --- the CLI checks before it switches ----------------------------------------------------------


def test_models_add_refuses_a_truncated_gguf(env: dict[str, str], served_gguf: Path, tmp_path: Path) -> None:
    cut = truncated_copy(served_gguf, tmp_path / "cut.gguf")
    refused = one_line_refusal(iris(env, "models", "add", "cut", "--gguf", str(cut)), "not added: cut.gguf")
    assert "does not load" in refused
    assert "cut" not in iris(env, "models", "list").stdout


def test_activate_and_rollback_refuse_a_file_truncated_after_registration(
    env: dict[str, str], served_gguf: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.gguf", tmp_path / "second.gguf"
    shutil.copyfile(served_gguf, first)
    shutil.copyfile(served_gguf, second)
    for name, path in (("first", first), ("second", second)):
        assert iris(env, "models", "add", name, "--gguf", str(path)).returncode == 0
    assert iris(env, "models", "activate", "first").returncode == 0
    truncated_copy(served_gguf, second)  # damaged after it was registered

    refused = one_line_refusal(iris(env, "models", "activate", "second"), "not activated: second: second.gguf")
    assert "does not load" in refused and "first stays active" in refused
    listed = iris(env, "models", "list").stdout
    assert "* first" in listed and "  second" in listed
    assert "broken: second.gguf does not load" in listed

    shutil.copyfile(served_gguf, second)  # repaired: it is checked again, accepted, its mark cleared
    assert iris(env, "models", "activate", "second").stdout.strip() == "active: second"
    assert "broken" not in iris(env, "models", "list").stdout
    truncated_copy(served_gguf, first)
    one_line_refusal(iris(env, "models", "rollback"), "not rolled back to first: first.gguf")
    store = stored(env)
    active = store.active_model()
    store.engine.dispose()
    assert active is not None and active.name == "second"


def test_iris_ask_with_only_a_damaged_model_says_so_without_a_traceback(
    env: dict[str, str], served_gguf: Path, tmp_path: Path
) -> None:
    """First start, nothing ever loaded: the person gets a sentence, the turn is marked failed."""
    env = {**env, "IRIS_LLM_MODEL": str(truncated_copy(served_gguf, tmp_path / "only.gguf"))}
    asked = iris(env, "ask", "Hello", "--json")
    assert "Traceback" not in asked.stderr + asked.stdout
    answer = json.loads(asked.stdout)
    assert answer["reply"] is None
    assert (
        answer["notice"]
        == "I cannot answer right now (the model file does not load). Please try again in a minute."
    )
    store = stored(env)
    turn = store.get_turn(answer["user_turn_id"])
    store.engine.dispose()
    assert turn is not None and turn.role is Role.USER and turn.error == answer["notice"]


# --- the gate's promotion -----------------------------------------------------------------------


def test_the_gates_promotion_check_loads_and_answers_in_a_child(served_gguf: Path, tmp_path: Path) -> None:
    assert check_servable(served_gguf).strip()
    with pytest.raises(GateFailure, match=r"^not promoted: cut.gguf does not load in llama.cpp"):
        check_servable(truncated_copy(served_gguf, tmp_path / "cut.gguf"))


def test_the_check_costs_about_a_second_or_two(served_gguf: Path) -> None:
    """A figure for the docs: a fresh Python, llama.cpp, the F16 file, one short answer."""
    began = time.perf_counter()
    assert check_gguf(served_gguf)
    seconds = time.perf_counter() - began
    print(f"check_gguf of the served F16 model: {seconds:.2f} s")
    assert seconds < 30


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelUnloadable, match="no such file"):
        check_gguf(tmp_path / "gone.gguf")


def test_a_check_that_hangs_is_cut_off(served_gguf: Path) -> None:
    with pytest.raises(ModelUnloadable, match=r"did not answer within 0 s"):
        check_gguf(served_gguf, timeout_s=0.05)


# --- the hot swap in a running bot --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def running(
    tmp_path: Path, served_gguf: Path, database_url: str, transcriber: WhisperTranscriber
) -> Iterator[tuple[App, Clock]]:
    """The whole app on SQLite or PostgreSQL, its generator on a clock the test moves."""
    settings = make_settings(tmp_path, served_gguf, database_url=database_url)
    application = build_app(settings)
    application.service.listener.transcriber = application.transcriber = transcriber
    clock = Clock()
    assert isinstance(application.generator, LlamaGenerator)
    application.generator.clock = clock
    application.generator.backoff = LoadBackoff(first_s=30, most_s=600)
    yield application, clock
    application.close()


async def reply(app: App, text: str) -> ReplyDone | Notice:
    message = IncomingMessage(CHAT, ALICE, text=text)
    events = [event async for event in app.service.replies.handle(message)]
    last = events[-1]
    assert isinstance(last, ReplyDone | Notice), events
    return last


def loads_of(caplog: pytest.LogCaptureFixture, name: str) -> int:
    """How often the generator tried to load version ``name``."""
    return sum(
        1
        for r in caplog.records
        if r.name == "core.generation" and r.getMessage().startswith(f"loading {name} ")
    )


async def test_a_damaged_version_made_active_leaves_the_loaded_model_serving(
    running: tuple[App, Clock], served_gguf: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, clock = running
    store: SqlStore = app.store
    caplog.set_level(logging.INFO, logger="core.generation")
    good = store.active_model()
    assert good is not None
    first = await reply(app, "What is the capital of France?")
    assert isinstance(first, ReplyDone) and first.model == good.name

    # Another process (or a hand in the database) makes a damaged file active.
    damaged = truncated_copy(served_gguf, tmp_path / "damaged.gguf")
    store.register_model("damaged", str(damaged), activate=True)
    caplog.clear()

    second = await reply(app, "Hello, who are you?")
    assert isinstance(second, ReplyDone) and second.text.strip()
    assert second.model == good.name
    stored_reply = store.get_turn(second.turn_id)
    assert stored_reply is not None and stored_reply.model_version == good.name
    broken = next(v for v in store.list_models() if v.name == "damaged")
    assert broken.active and broken.load_error and "damaged.gguf does not load" in broken.load_error
    assert "Broken: damaged.gguf does not load" in format_stats(store.stats())

    # Within the back-off no reply tries the file again; the failure was logged once.
    clock.now += 29
    assert isinstance(await reply(app, "And again?"), ReplyDone)
    assert loads_of(caplog, "damaged") == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "damaged" in r.getMessage()]
    assert len(errors) == 1

    # After 30 s it is tried again, fails again (logged at debug only), and waits 60 s next.
    clock.now += 2
    assert (await reply(app, "Still there?")).model == good.name  # type: ignore[union-attr]
    assert loads_of(caplog, "damaged") == 2
    shutil.copyfile(served_gguf, damaged)  # repaired
    clock.now += 59
    assert (await reply(app, "One more?")).model == good.name  # type: ignore[union-attr]
    assert loads_of(caplog, "damaged") == 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    clock.now += 2
    swapped = await reply(app, "What is the capital of France?")
    assert isinstance(swapped, ReplyDone) and swapped.model == "damaged"
    stored_swap = store.get_turn(swapped.turn_id)
    assert stored_swap is not None and stored_swap.model_version == "damaged"
    healed = next(v for v in store.list_models() if v.name == "damaged")
    assert healed.load_error is None
    assert "Broken" not in format_stats(store.stats())


async def test_the_broken_mark_is_shown_by_iris_models_list(
    running: tuple[App, Clock], served_gguf: Path, tmp_path: Path, database_url: str
) -> None:
    app, _ = running
    app.store.register_model("damaged", str(truncated_copy(served_gguf, tmp_path / "damaged.gguf")))
    assert isinstance(await reply(app, "Hi"), ReplyDone)
    app.store.activate_model("damaged")
    assert isinstance(await reply(app, "Hi again"), ReplyDone)
    listed = iris(cli_env(tmp_path, served_gguf, DATABASE_URL=database_url), "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert "* damaged" in listed.stdout
    assert "broken: damaged.gguf does not load" in listed.stdout


async def test_a_fresh_start_with_a_damaged_active_version_serves_the_version_before_it(
    tmp_path: Path, served_gguf: Path, transcriber: WhisperTranscriber
) -> None:
    settings = make_settings(tmp_path, served_gguf)
    first = build_app(settings)
    good = first.store.active_model()
    assert good is not None
    damaged = truncated_copy(served_gguf, tmp_path / "damaged.gguf")
    first.store.register_model("damaged", str(damaged), activate=True)  # while no bot runs
    first.close()

    restarted = build_app(settings)
    restarted.service.listener.transcriber = restarted.transcriber = transcriber
    try:
        restarted.warm_up()
        answered = await reply(restarted, "What is the capital of France?")
        assert isinstance(answered, ReplyDone) and answered.text.strip()
        assert answered.model == good.name
        stored_reply = restarted.store.get_turn(answered.turn_id)
        assert stored_reply is not None and stored_reply.model_version == good.name
        active = restarted.store.active_model()
        assert active is not None and active.name == "damaged" and active.load_error  # shown broken
    finally:
        restarted.close()


async def test_with_nothing_loaded_a_damaged_model_gets_a_sentence_and_a_failed_turn(
    tmp_path: Path, served_gguf: Path, transcriber: WhisperTranscriber, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = truncated_copy(served_gguf, tmp_path / "only.gguf")
    app = build_app(make_settings(tmp_path, damaged))
    app.service.listener.transcriber = app.transcriber = transcriber
    caplog.set_level(logging.INFO, logger="core.generation")
    try:
        app.warm_up()  # the bot starts; it does not die
        for text in ("Hello", "Hello?"):
            notice = await reply(app, text)
            assert isinstance(notice, Notice) and notice.kind is NoticeKind.MODEL_FAILED
            assert "the model file does not load" in notice.text and "Traceback" not in notice.text
            turn = app.store.get_turn(notice.turn_id)
            assert turn is not None and turn.error == notice.text
        loading = [r for r in caplog.records if r.getMessage().startswith("loading ")]
        assert len(loading) == 1  # warm-up tried; the replies within the back-off did not
    finally:
        app.close()
