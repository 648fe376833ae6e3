"""/forget reaches every copy: exports, built datasets and retrain runs, and the database file itself.

The person talks to the real service (real model), an operator runs the real
``iris feedback export`` to a folder outside the data dir, and a retrain run's
dataset is built into its run folder; then the person uses /forget, and every
file under the data dir and the export folder is searched for their words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bots.app import App, database_url, retrain_dir
from bots.render import format_forget
from core.domain import ChatRef, IncomingMessage, Person, ReplyDone
from finetune.copies import listed_copies
from finetune.dataset import BuildConfig, build_dataset
from finetune.profiles import PROFILES
from finetune.runs import Run

IRIS = str(Path(sys.executable).with_name("iris"))
ADA = Person("telegram", "71", "Ada")
BOB = Person("telegram", "72", "Bob")
ADA_ASKS = "Where does the quokka Wendeline Zarathustra live?"
ADA_FIX = "Wendeline Zarathustra lives on Rottnest Island near Perth."
BOB_ASKS = "What is the capital of France?"


async def ask(app: App, person: Person, text: str) -> int:
    chat = ChatRef(person.platform, person.user_id)
    done = [
        e
        async for e in app.service.handle(IncomingMessage(chat, person, text=text))
        if isinstance(e, ReplyDone)
    ]
    return done[0].turn_id


def files_holding(roots: list[Path], *texts: str) -> list[str]:
    """Every file under the roots whose bytes contain one of the texts (any case)."""
    wanted = [text.lower().encode() for text in texts]
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and any(text in path.read_bytes().lower() for text in wanted):
                found.append(str(path))
    return found


def export(app: App, out: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env["IRIS_DATA_DIR"] = str(app.settings.data_dir)
    result = subprocess.run(
        [IRIS, "feedback", "export", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def finished_run(work_dir: Path, url: str, *, trained: bool, finished: bool) -> Run:
    """A retrain run folder as the pipeline leaves it after its dataset (and, if ``trained``, later) steps."""
    run = Run.create(work_dir, PROFILES["cpu-tiny"], dry_run=False)
    dataset = run.dir / "dataset"
    build_dataset(
        "sample", dataset, database_url=url, config=BuildConfig(sample_size=40, eval_finetome=4, progress=False)
    )
    run.record("dataset", {"dir": str(dataset)}, 1.0)
    if trained:
        (run.dir / "train").mkdir()
        run.record("train", {"stages": []}, 1.0)
    if finished:
        run.record("register", {"name": run.name}, 0.1)
        run.finish("promoted")
    return run


async def test_forget_removes_the_words_from_exports_datasets_runs_and_the_database_file(
    app: App, tmp_path: Path
) -> None:
    ada_reply = await ask(app, ADA, ADA_ASKS)
    bob_reply = await ask(app, BOB, BOB_ASKS)
    await app.service.rate(ADA, ada_reply, up=False)
    fix = await app.service.correct(ADA, ada_reply, ADA_FIX)
    await app.service.review(fix, True, "console:test")
    await app.service.rate(BOB, bob_reply, up=True)

    outside = tmp_path / "exports" / "monday"
    export(app, outside)
    url = database_url(app.settings)
    work_dir = retrain_dir(app.settings)
    promoted = finished_run(work_dir, url, trained=True, finished=True)
    killed = finished_run(work_dir, url, trained=True, finished=False)
    roots = [app.settings.data_dir, outside.parent]
    assert [entry["path"] for entry in listed_copies(app.settings.data_dir)] == [str(outside.resolve())]
    assert files_holding(roots, ADA_ASKS, ADA_FIX)  # the copies really held her words

    report = await app.service.forget(ADA)

    assert files_holding(roots, ADA_ASKS, ADA_FIX, "Wendeline") == []
    assert report.copies is not None and report.copies.unreachable == ()
    assert sorted(report.copies.models) == sorted([promoted.name, killed.name])
    assert report.copies.rows > 0 and not report.complete
    # Bob's feedback is still there for the next training.
    assert files_holding([outside], BOB_ASKS)
    kept = [json.loads(line) for line in (outside / "sft.jsonl").read_text().splitlines()]
    meta = (outside / "sft_meta.jsonl").read_text().splitlines()
    manifest = json.loads((outside / "manifest.json").read_text())
    assert len(kept) == len(meta) == manifest["counts"]["sft"] == 1
    # The killed run trained on her words: --resume must not continue from its weights.
    assert Run.load(killed.dir).state["status"] == "discarded"
    assert Run.unfinished(work_dir) is None

    told = format_forget(report)
    assert promoted.name in told and killed.name in told
    assert "no future training will use your words" in told
    assert "Nothing about you is stored any more" not in told


async def test_forget_without_copies_says_nothing_is_left(app: App) -> None:
    await ask(app, ADA, ADA_ASKS)
    report = await app.service.forget(ADA)
    assert report.copies is not None and report.copies.files == 0 and report.complete
    assert files_holding([app.settings.data_dir], ADA_ASKS) == []
    assert format_forget(report).endswith("Nothing about you is stored any more.")
