"""Full disks and read-only folders, on a real small tmpfs: one clear line, nothing half-written.

Each test mounts a tmpfs of a few megabytes (root only: a tmpfs is the one honest way to make
a disk full without filling the machine's), fills it with a ballast file, and runs the ``iris``
command as a person would. What must hold: the command says in one line what is wrong, no file
that looks complete (a manifest, a report, a GGUF, an audio file) is left half-written, no
``.partial`` is left behind, and nothing already stored is lost.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from finetune.data import FINETOME_SAMPLE
from tests.finetune.conftest import Seeded, seeded  # noqa: F401  (a fixture)
from tests.finetune.test_feedback import copy_database
from tests.test_cli import env, iris  # noqa: F401  (env is a fixture)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs to fill it needs root; run as root to test full disks"
)


@contextmanager
def tmpfs(where: Path, size: str = "4m", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block; unmounted however it ends."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(folder: Path, *, leave: int = 0) -> Path:
    """Fill the file system that holds ``folder`` to the last page, then free ``leave`` bytes of it."""
    ballast = folder / "ballast"
    descriptor = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                written = os.write(descriptor, block)
            except OSError:
                break
            if written < len(block):
                block = block[written:] or b"\0"
    finally:
        os.close(descriptor)
    if leave:
        os.truncate(ballast, max(ballast.stat().st_size - leave, 0))
    return ballast


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed: one line, ``iris: …``, last (after any progress bars)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("iris: ")]
    assert errors == lines[-1:], result.stderr
    return errors[0]


def leftovers(folder: Path) -> list[Path]:
    """Temporary files or folders a failed write left behind."""
    return [path for path in folder.rglob("*") if ".partial" in path.name]


def turns(database: Path) -> list[tuple[str, str]]:
    """Every stored turn's role and text, in order."""
    with sqlite3.connect(database) as connection:
        return list(connection.execute("SELECT role, text FROM turns ORDER BY id"))


def dump(database_url: str) -> list[str]:
    """Every row of a SQLite database, as SQL: equal dumps, equal contents."""
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        return list(connection.iterdump())


@pytest.fixture
def feedback_env(seeded: Seeded, tmp_path: Path, served_gguf: Path) -> dict[str, str]:  # noqa: F811
    """The ``iris`` environment on a private copy of the seeded feedback database."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "DATABASE_URL", "HF_"))}
    (tmp_path / "data").mkdir()
    return {
        **clean,
        "IRIS_DATA_DIR": str(tmp_path / "data"),
        "IRIS_LLM_MODEL": str(served_gguf),
        "DATABASE_URL": copy_database(seeded, tmp_path),
    }


def test_export_to_a_full_disk_leaves_no_export_that_looks_complete(
    feedback_env: dict[str, str], tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        out = disk / "feedback"
        first = iris(feedback_env, "feedback", "export", "--out", str(out))
        assert first.returncode == 0, first.stderr
        earlier = (out / "sft.jsonl").read_bytes()
        assert (out / "manifest.json").exists() and earlier
        assert {path.stat().st_mode & 0o777 for path in out.iterdir()} == {0o600}  # people's words
        before = dump(feedback_env["DATABASE_URL"])
        os.link(out / "manifest.json", disk / "kept")  # so removing it frees no room for the next export
        fill(disk)

        again = iris(feedback_env, "feedback", "export", "--out", str(out), "--no-scrub")

        error = one_line_error(again)
        assert "no space left" in error and str(out) in error
        # The earlier export's manifest no longer vouches for files that may be half new.
        assert not (out / "manifest.json").exists()
        assert not leftovers(disk)
        assert (out / "sft.jsonl").read_bytes() == earlier  # replaced whole or not at all
        assert dump(feedback_env["DATABASE_URL"]) == before


def test_export_to_a_read_only_folder(feedback_env: dict[str, str], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        out = disk / "feedback"
        first = iris(feedback_env, "feedback", "export", "--out", str(out))
        assert first.returncode == 0, first.stderr
        earlier = {path.name: path.read_bytes() for path in out.iterdir()}
        remount_read_only(disk)

        again = iris(feedback_env, "feedback", "export", "--out", str(out), "--no-scrub")
        fresh = iris(feedback_env, "feedback", "export", "--out", str(disk / "new"))

        error = one_line_error(again)
        assert "read-only file system" in error and str(out) in error
        assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier  # untouched, still whole
        assert "read-only file system" in one_line_error(fresh) and not (disk / "new").exists()


def test_a_write_cut_short_by_a_full_disk_keeps_the_previous_file(tmp_path: Path) -> None:
    from core.files import atomic_write

    with tmpfs(tmp_path / "disk") as disk:
        target = disk / "state.json"
        atomic_write(target, b'{"status": "running"}')
        fill(disk, leave=8192)  # room for the first pages of the new file, not for all of it

        with pytest.raises(OSError) as raised:
            atomic_write(target, b"x" * 200_000)

        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
        assert target.read_bytes() == b'{"status": "running"}'
        assert not leftovers(disk)


def test_dataset_build_on_a_full_disk(feedback_env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    exported = iris(feedback_env, "feedback", "export", "--out", str(tmp_path / "feedback"))
    assert exported.returncode == 0, exported.stderr
    build = ["dataset", "build", "--finetome", str(FINETOME_SAMPLE), "--feedback", str(tmp_path / "feedback")]
    build += ["--sample-size", "40"]
    with tmpfs(tmp_path / "disk", size="8m") as disk:
        out = disk / "dataset"
        first = iris(feedback_env, *build, "--out", str(out))
        assert first.returncode == 0, first.stderr
        assert (out / "report.json").exists() and (out / "hf" / "dataset_dict.json").exists()
        assert (out / "hf").stat().st_mode & 0o777 == 0o700
        os.link(out / "report.json", disk / "kept")  # so removing it frees no room for the next build
        fill(disk)

        again = iris(feedback_env, *build, "--out", str(out), "--seed", "2")

        error = one_line_error(again)
        assert "no space left" in error and str(out) in error
        assert not (out / "report.json").exists()  # the build that failed does not look done
        assert not leftovers(disk)


def test_dataset_build_fails_in_the_arrow_copy(feedback_env: dict[str, str], tmp_path: Path) -> None:
    """Room for the JSONL files but not for ``hf/``: the Arrow copy is removed whole, no report."""
    pytest.importorskip("datasets")
    build = ["dataset", "build", "--finetome", str(FINETOME_SAMPLE), "--sample-size", "40"]
    with tmpfs(tmp_path / "disk", size="8m") as disk:
        sized = iris(feedback_env, *build, "--out", str(disk / "sized"))
        assert sized.returncode == 0, sized.stderr
        jsonl_bytes = sum(path.stat().st_size for path in (disk / "sized").glob("*.jsonl"))
        fill(disk, leave=jsonl_bytes + 64 * 1024)

        result = iris(feedback_env, *build, "--out", str(disk / "dataset"))

        error = one_line_error(result)
        assert "no space left" in error
        assert (disk / "dataset" / "train.jsonl").exists()  # the JSONL fitted ...
        assert not (disk / "dataset" / "hf").exists()  # ... the Arrow copy did not, and is gone whole
        assert not (disk / "dataset" / "report.json").exists()
        assert not leftovers(disk)


def test_retrain_run_folder_on_a_full_disk(feedback_env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    with tmpfs(tmp_path / "disk", size="8m") as disk:
        fill(disk, leave=8 * 1024)  # room for state.json, not for the run's dataset
        env_ = {**feedback_env, "IRIS_RETRAIN_DIR": str(disk), "IRIS_DATASET_SAMPLE_SIZE": "40"}

        result = iris(env_, "retrain", "--dry-run", "--profile", "cpu-tiny")

        error = one_line_error(result)
        assert "no space left" in error
        (state_file,) = disk.glob("runs/*/state.json")
        state = json.loads(state_file.read_text())  # whole, as last written
        assert state["status"] in ("dry-run", "failed")
        assert not leftovers(disk)


def test_ask_speak_to_a_full_disk_still_answers(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    with tmpfs(tmp_path / "disk") as disk:
        fill(disk)
        out = disk / "reply.ogg"

        result = iris(env, "ask", "What is the capital of France?", "--speak", str(out))

        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        notes = [line for line in result.stdout.splitlines() if "spoken reply was not written" in line]
        assert len(notes) == 1 and "no space left" in notes[0] and str(out) in notes[0]
        assert not out.exists() and not leftovers(disk)
    (question, reply) = turns(Path(env["IRIS_DATA_DIR"]) / "iris.db")
    assert question == ("user", "What is the capital of France?") and reply[0] == "assistant"
    assert reply[1].strip() in result.stdout  # stored and shown


def test_spoken_audio_is_private(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path / "reply.ogg"
    result = iris(env, "ask", "Hello!", "--speak", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_command_on_a_full_database_disk_says_so(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    with tmpfs(tmp_path / "disk", size="16m") as disk:
        env_ = {**env, "IRIS_DATA_DIR": str(disk / "data")}
        first = iris(env_, "ask", "What is the capital of France?", "--json")
        assert first.returncode == 0, first.stderr
        earlier = json.loads(first.stdout)
        ballast = fill(disk)

        refused = iris(env_, "ask", "What is the largest planet?")

        assert refused.stdout == ""
        error = one_line_error(refused)
        assert "database" in error and "disk full" in error
        ballast.unlink()
        again = iris(env_, "ask", "What is the tallest mountain?")
        assert again.returncode == 0, again.stderr
        texts = [text for _, text in turns(disk / "data" / "iris.db")]
        assert texts[:2] == ["What is the capital of France?", earlier["reply"]]  # intact
        assert "What is the largest planet?" not in texts  # refused, and the person was told
        assert texts[2] == "What is the tallest mountain?"


async def test_a_running_bot_on_a_full_database_disk_tells_the_person(
    tmp_path: Path, served_gguf: Path
) -> None:
    from bots.app import build_app
    from core.domain import ChatRef, IncomingMessage, Notice, NoticeKind, Person, ReplyDone
    from tests.conftest import make_settings

    person = Person("telegram", "42", "Ada")

    async def say(text: str, number: int) -> list[object]:
        message = IncomingMessage(ChatRef("telegram", "42"), person, text=text, message_id=str(number))
        return [event async for event in application.service.replies.handle(message)]

    with tmpfs(tmp_path / "disk", size="16m") as disk:
        application = build_app(make_settings(disk, served_gguf, generation_max_tokens=16))
        try:
            first = await say("What is the capital of France?", 1)
            assert isinstance(first[-1], ReplyDone)
            ballast = fill(disk)

            refused = await say("What is the largest planet?", 2)

            (notice,) = [event for event in refused if isinstance(event, Notice)]
            assert notice.kind is NoticeKind.STORE_FAILED and "could not save your message" in notice.text
            assert not any(isinstance(event, ReplyDone) for event in refused)
            ballast.unlink()
            again = await say("What is the largest planet?", 3)  # the person tries again, as told
            assert isinstance(again[-1], ReplyDone)
        finally:
            application.close()
        texts = [text for _, text in turns(disk / "data" / "iris.db")]
        assert texts[0] == "What is the capital of France?" and texts[1] == first[-1].text
        assert texts[2:3] == ["What is the largest planet?"] and len(texts) == 4


def stored_feedback_and_models(database_url: str) -> list[list[tuple[object, ...]]]:
    """The stored feedback (turns, ratings, corrections) and the model registry, row by row."""
    tables = ("turns", "ratings", "corrections", "model_versions")
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        return [list(connection.execute(f"SELECT * FROM {table} ORDER BY id")) for table in tables]


def test_retrain_anchor_rows_on_a_full_disk(feedback_env: dict[str, str], tmp_path: Path) -> None:
    """The anchor step asks the base model its questions, then writing the facts with their anchor
    rows (``teach.json``) meets a full disk: the run fails in one line, before any training."""
    import shutil

    pytest.importorskip("datasets")
    work = tmp_path / "work"
    # Should the run get past the dataset step after all, one training step, not a hundred.
    env_ = {**feedback_env, "IRIS_RETRAIN_DIR": str(work), "IRIS_DATASET_SAMPLE_SIZE": "40"}
    env_ |= {"IRIS_RETRAIN_MAX_STEPS": "1", "IRIS_RETRAIN_MAX_TEACH_STEPS": "1"}
    # A dataset as a run builds it (its feedback export included), built off the small disk.
    built = iris(env_, "retrain", "--dry-run", "--profile", "cpu-tiny")
    assert built.returncode == 0, built.stderr
    (made,) = work.glob("runs/*/dataset")
    with tmpfs(tmp_path / "disk", size="8m") as disk:
        dataset = disk / "dataset"
        shutil.copytree(made, dataset)
        (dataset / "teach.json").unlink()  # the anchor step below writes it anew
        untaught = dataset / "eval_feedback_untaught.jsonl"  # rewritten before the anchor step
        os.link(untaught, disk / "kept")  # so replacing it frees no room for teach.json
        earlier = {path: path.read_bytes() for path in dataset.rglob("*") if path.is_file()}
        stored = stored_feedback_and_models(feedback_env["DATABASE_URL"])
        fill(disk, leave=-(-untaught.stat().st_size // 4096) * 4096)  # room for that file alone

        result = iris(env_, "retrain", "--profile", "cpu-tiny", "--dataset", str(dataset))

        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
        assert "anchors: " in result.stdout  # the base model answered the anchor questions first
        failure = result.stderr.strip().splitlines()[-1]  # what the person reads last: one line, on stderr
        assert "failed: " in failure and "No space left on device" in failure
        assert str(dataset / "teach.json") in failure and "The active model is unchanged" in failure
        assert "failed: " not in result.stdout
        logged = [line for line in result.stderr.splitlines() if " ERROR " in line]
        assert len(logged) == 1 and "No space left on device" in logged[0]  # in the log: one line too
        # No dataset file half-written: no teach.json, nothing temporary, every other file as it was.
        assert not (dataset / "teach.json").exists() and not leftovers(disk)
        assert {path: path.read_bytes() for path in dataset.rglob("*") if path.is_file()} == earlier
    (state_file,) = [path for path in work.glob("runs/*/state.json") if "dry-run" not in path.parent.name]
    state = json.loads(state_file.read_text())
    assert state["status"] == "failed" and state["steps"] == {}  # --resume makes the anchors again
    assert not (state_file.parent / "train").exists()  # nothing trained
    assert stored_feedback_and_models(feedback_env["DATABASE_URL"]) == stored  # the active model too
