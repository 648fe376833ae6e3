"""The first model load of a process cannot crash it: that load is checked in a child too.

The crash is real: a copy of the bundled GGUF whose vocabulary holds one token twice (token
101, "u", rewritten in place as token 100, "t"), on which llama.cpp's vocabulary loader fails
an assertion and aborts the process (SIGABRT). Loaded in the bot's own process at start, it
would kill the bot at every restart. The bot runs as a person runs it (``iris ask``, a real
process); the memory of checked files is read and written by real generators.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bots.app import ensure_served_model, open_store
from core.domain import ModelVersion
from core.generation import LlamaGenerator, LlmConfig
from core.gguf import bundled_gguf_path
from core.model_check import CHECKED_RECORD, ModelUnloadable, check_gguf
from tests.conftest import make_settings
from tests.test_cli import iris, stored
from tests.test_model_health import cli_env

UNAVAILABLE = "I cannot answer right now (the model file does not load). Please try again in a minute."


def _string(text: bytes) -> bytes:
    """A GGUF string: its length as a little-endian uint64, then its bytes."""
    return len(text).to_bytes(8, "little") + text


@pytest.fixture(scope="module")
def crashing_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF with token 101 ("u") made a second "t": llama.cpp aborts while loading it."""
    data = bundled_gguf_path().read_bytes()
    run = b"".join(_string(letter) for letter in (b"s", b"t", b"u", b"v", b"w"))  # tokens 99 to 103
    assert data.count(run) == 1
    at = data.index(run) + len(_string(b"s") + _string(b"t") + _string(b""))
    target = tmp_path_factory.mktemp("crashing") / "crashing.gguf"
    target.write_bytes(data[:at] + b"t" + data[at + 1 :])
    return target


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files ``check_gguf`` starts a child process for, in order, while the test runs."""
    started: list[str] = []
    real_run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run

    def counting_run(command: list[str], *args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        if "answer_in_child" in " ".join(command):
            started.append(Path(command[3]).name)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting_run)  # the module check_gguf calls it from
    return started


def test_the_damaged_file_really_kills_a_process_with_a_signal(crashing_gguf: Path) -> None:
    with pytest.raises(ModelUnloadable, match=r"^crashing.gguf crashed llama.cpp \(SIGABRT\)$"):
        check_gguf(crashing_gguf)


# --- a start whose active version crashes llama.cpp ---------------------------------------------


def test_a_start_on_a_file_that_crashes_llama_cpp_serves_the_version_before_it(
    tmp_path: Path, served_gguf: Path, crashing_gguf: Path
) -> None:
    env = cli_env(tmp_path, served_gguf, IRIS_GENERATION_MAX_TOKENS="24")
    store = open_store(make_settings(tmp_path, served_gguf))
    good = ensure_served_model(store, make_settings(tmp_path, served_gguf))
    store.register_model("crashing", str(crashing_gguf), activate=True)  # while no bot runs
    store.engine.dispose()

    asked = iris(env, "ask", "What is the capital of France?", "--json")
    assert asked.returncode == 0, (asked.returncode, asked.stderr[-2000:])  # -6 if llama.cpp aborted it
    assert "Traceback" not in asked.stdout + asked.stderr
    assert asked.stdout.startswith("{"), (asked.stdout, asked.stderr[-2000:])
    answer = json.loads(asked.stdout)
    assert answer["reply"].strip() and answer["model"] == good.name
    after = stored(env)
    active = after.active_model()
    after.engine.dispose()
    assert active is not None and active.name == "crashing"
    assert active.load_error == "crashing.gguf crashed llama.cpp (SIGABRT)"  # shown broken


def test_a_start_with_only_a_file_that_crashes_llama_cpp_says_so_in_a_sentence(
    tmp_path: Path, served_gguf: Path, crashing_gguf: Path
) -> None:
    env = cli_env(tmp_path, crashing_gguf)
    asked = iris(env, "ask", "Hello", "--json")
    assert "Traceback" not in asked.stdout + asked.stderr
    assert asked.returncode >= 0, asked.stderr[-2000:]
    assert asked.stdout.startswith("{"), (asked.stdout, asked.stderr[-2000:])
    answer = json.loads(asked.stdout)
    assert answer["reply"] is None and answer["notice"] == UNAVAILABLE


# --- the memory of files already checked --------------------------------------------------------


def start(model: Path, record: Path) -> None:
    """What a bot's start does with the model: a generator that loads it."""
    version = ModelVersion(id=0, name="copy", gguf_path=str(model))
    generator = LlamaGenerator(None, version, LlmConfig(context_tokens=512, parallel=1), checked_record=record)
    try:
        generator.load()
    finally:
        generator.close()


def test_an_unchanged_file_is_checked_once_and_again_when_touched_or_replaced(
    tmp_path: Path, served_gguf: Path, children: list[str]
) -> None:
    model = tmp_path / "model.gguf"
    shutil.copyfile(served_gguf, model)
    record = tmp_path / "data" / CHECKED_RECORD

    start(model, record)
    assert children == ["model.gguf"]
    assert list(json.loads(record.read_text())["files"]) == [str(model.resolve())]
    start(model, record)
    start(tmp_path / "." / "model.gguf", record)  # the same file by another name
    assert children == ["model.gguf"]

    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched
    start(model, record)
    start(model, record)
    assert children == ["model.gguf"] * 2

    replacement = tmp_path / "replacement.gguf"
    shutil.copy2(model, replacement)  # the same size and mtime: only the inode differs
    os.replace(replacement, model)
    start(model, record)
    start(model, record)
    assert children == ["model.gguf"] * 3


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not json",
        b'{"files": ',
        b"[]",
        b'{"files": [1, 2]}',
        b'{"files": {"a\\u0000b": 1, "' + b"x" * 5000 + b'": {}}}',  # names no file system takes
        b"[" * 100_000,
    ],
)
def test_a_corrupt_record_counts_as_empty_and_is_written_anew(
    tmp_path: Path, served_gguf: Path, children: list[str], content: bytes
) -> None:
    record = tmp_path / "data" / CHECKED_RECORD
    record.parent.mkdir()
    record.write_bytes(content)

    start(served_gguf, record)
    start(served_gguf, record)
    assert children == [served_gguf.name]
    assert list(json.loads(record.read_text())["files"]) == [str(served_gguf.resolve())]


def test_a_record_that_cannot_be_read_or_written_costs_a_check_at_every_start_only(
    tmp_path: Path, served_gguf: Path, children: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    record = tmp_path / "data" / CHECKED_RECORD
    record.mkdir(parents=True)  # a folder where the file should be: neither read nor replaced
    start(served_gguf, record)
    start(served_gguf, record)
    assert children == [served_gguf.name] * 2
    assert any("could not remember" in r.getMessage() for r in caplog.records)
