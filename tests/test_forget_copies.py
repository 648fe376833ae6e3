"""/forget takes a person's rows out of every copy Iris wrote, and nothing else.

The person talks to the real service (real model), an operator runs the real
``iris feedback export`` and builds a dataset from it, retrain runs build theirs
into their run folders; then the person uses /forget. Copies are found by what
Iris recorded beside each row (pseudonyms, turn and conversation ids), never by
the words: a model folder, a cache or another person's row that happens to hold
the same words is left byte for byte as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bots.app import App, database_url, retrain_dir
from bots.render import format_forget
from core.domain import ChatRef, ErasedCopies, IncomingMessage, Person, ReplyDone
from finetune.config import BuildConfig
from finetune.copies import CopyEraser, NotACopy, listed_copies, record_copy
from finetune.dataset import build_dataset
from finetune.feedback import KEY_FILE, deployment_key, legacy_pseudonym
from finetune.profiles import PROFILES
from finetune.retrain import taught_facts
from finetune.runs import Run
from finetune.teaching import write_facts
from storage.tables import ConversationRow, TurnRow

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
        async for e in app.service.replies.handle(IncomingMessage(chat, person, text=text))
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


def iris(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env["IRIS_DATA_DIR"] = str(app.settings.data_dir)
    return subprocess.run([IRIS, *args], env=env, capture_output=True, text=True, timeout=300)


def export(app: App, out: Path) -> None:
    result = iris(app, "feedback", "export", "--out", str(out))
    assert result.returncode == 0, result.stderr


def finished_run(work_dir: Path, url: str, *, trained: bool, finished: bool) -> Run:
    """A retrain run folder as the pipeline leaves it after its dataset (and, if ``trained``, later) steps."""
    run = Run.create(work_dir, PROFILES["cpu-tiny"], dry_run=False)
    dataset = run.dir / "dataset"
    build_dataset(
        "sample", dataset, database_url=url, config=BuildConfig(sample_size=40, eval_finetome=4, progress=False)
    )
    write_facts(dataset / "teach.json", taught_facts(dataset))  # as the run's dataset step does
    run.record("dataset", {"dir": str(dataset)}, 1.0)
    if trained:
        (run.dir / "train").mkdir()
        run.record("train", {"stages": []}, 1.0)
    if finished:
        run.record("register", {"name": run.name}, 0.1)
        run.finish("promoted")
    return run


def tree(*roots: Path) -> dict[Path, str]:
    """Every file under the roots and the sha256 of its bytes."""
    return {
        path: hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in root.rglob("*")
        if path.is_file()
    }


def keyed(data_dir: Path, person: Person) -> str:
    key = bytes.fromhex((data_dir / KEY_FILE).read_text().strip())
    message = f"iris-person:{person.platform}:{person.user_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:16]


def rows_with_meta(folder: Path, name: str) -> list[tuple[dict[str, object], dict[str, object]]]:
    rows = [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]
    meta = [json.loads(line) for line in (folder / f"{name}_meta.jsonl").read_text().splitlines()]
    assert len(rows) == len(meta)
    return list(zip(rows, meta, strict=True))


def of(pairs: list[tuple[dict[str, object], dict[str, object]]], name: str) -> list[dict[str, object]]:
    return [row for row, meta in pairs if name in (meta.get("people") or [meta.get("person")])]  # type: ignore[operator]


async def test_forget_removes_the_persons_rows_from_exports_datasets_and_runs(app: App, tmp_path: Path) -> None:
    ada_reply = await ask(app, ADA, ADA_ASKS)
    bob_reply = await ask(app, BOB, BOB_ASKS)
    await app.service.feedback.rate(ADA, ada_reply, up=False)
    fix = await app.service.feedback.correct(ADA, ada_reply, ADA_FIX)
    await app.service.feedback.review(fix, True, "console:test")
    await app.service.feedback.rate(BOB, bob_reply, up=True)

    outside = tmp_path / "exports" / "monday"
    export(app, outside)
    url = database_url(app.settings)
    work_dir = retrain_dir(app.settings)
    promoted = finished_run(work_dir, url, trained=True, finished=True)
    killed = finished_run(work_dir, url, trained=True, finished=False)
    roots = [app.settings.data_dir, outside.parent]
    assert [entry["path"] for entry in listed_copies(app.settings.data_dir)] == [str(outside.resolve())]
    assert files_holding(roots, ADA_ASKS, ADA_FIX)  # the copies really held her words

    report = await app.service.privacy.forget(ADA)

    assert files_holding(roots, ADA_ASKS, ADA_FIX, "Wendeline") == []
    assert report.copies is not None and report.copies.unreachable == () and report.copies.unchecked == ()
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
    report = await app.service.privacy.forget(ADA)
    assert report.copies is not None and report.copies.files == 0 and report.complete
    assert files_holding([app.settings.data_dir], ADA_ASKS) == []
    assert format_forget(report).endswith("Nothing about you is stored any more.")


def legacy_copy(export_dir: Path, legacy: Path, names: dict[str, str]) -> None:
    """``export_dir`` as an export made before the key: plain-hash pseudonyms, no owners beside KTO/DPO rows."""
    shutil.copytree(export_dir, legacy)
    meta = [json.loads(line) for line in (legacy / "sft_meta.jsonl").read_text().splitlines()]
    old = [
        {key: m[key] for key in ("kind", "reply_id", "model_version")} | {"person": names[m["person"]]}
        for m in meta
    ]
    (legacy / "sft_meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in old))
    for name in ("kto_meta.jsonl", "dpo_meta.jsonl"):
        (legacy / name).unlink()
    manifest = json.loads((legacy / "manifest.json").read_text())
    del manifest["pseudonyms"]
    manifest["files"] = {
        k: v for k, v in manifest["files"].items() if k not in ("kto_meta.jsonl", "dpo_meta.jsonl")
    }
    (legacy / "manifest.json").write_text(json.dumps(manifest))


async def test_forget_changes_only_the_persons_rows_in_irises_own_files(app: App, tmp_path: Path) -> None:
    data = app.settings.data_dir
    for person in (ADA, BOB):
        for text in ("llama", "ok"):  # the same words: only whose they are tells them apart
            await app.service.feedback.rate(person, await ask(app, person, text), up=True)
    await app.service.feedback.rate(BOB, await ask(app, BOB, BOB_ASKS), up=True)
    ada_reply = await ask(app, ADA, ADA_ASKS)
    await app.service.feedback.rate(ADA, ada_reply, up=False)
    await app.service.feedback.review(
        await app.service.feedback.correct(ADA, ada_reply, ADA_FIX), True, "console:test"
    )
    # A model folder and a chat template that hold the words, and files Iris does not know.
    base = data / "models" / "hf" / "smollm2"
    base.mkdir(parents=True)
    (base / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    (base / "tokenizer.json").write_text(
        json.dumps({"model": {"vocab": {"ok": 1, "llama": 2}}, "added": ["ok"]})
    )
    (base / "chat_template.jinja").write_text(
        "{{ 'llama' }} ok {% for m in messages %}{{ m.content }}{% endfor %}"
    )
    (data / "scratch.bin").write_bytes(b"\x00llama\x00ok\x00")
    export_dir = data / "exports" / "today"
    export(app, export_dir)
    ada, bob = keyed(data, ADA), keyed(data, BOB)
    legacy = tmp_path / "legacy-export"
    legacy_copy(export_dir, legacy, {ada: legacy_pseudonym(ADA.platform, ADA.user_id), bob: "0123456789abcdef"})
    (export_dir / "notes.txt").write_text("ok, llama\n")  # an operator's file beside a copy
    record_copy(data, legacy, "feedback export")
    dataset = tmp_path / "dataset"
    record_copy(data, dataset, "dataset build")
    config = BuildConfig(sample_size=20, eval_finetome=4, eval_fraction=0.0, progress=False)
    build_dataset("sample", dataset, feedback_dir=export_dir, config=config)
    before = tree(data, legacy, dataset)
    sft_before, kto_before = rows_with_meta(export_dir, "sft"), rows_with_meta(export_dir, "kto")
    train_before = rows_with_meta(dataset, "train")
    # There was something of hers to remove.
    assert of(sft_before, ada) and of(kto_before, ada) and of(train_before, ada)

    report = await app.service.privacy.forget(ADA)

    after = tree(data, legacy, dataset)
    iris_rows = {
        "manifest",
        "report",
        *(f"{n}{s}" for n in ("sft", "kto", "dpo", "train") for s in ("", "_meta")),
    }
    rewritten = {
        path
        for path in before.keys() | after.keys()
        if before.get(path) != after.get(path)
        and not (path.parent in (export_dir, legacy, dataset) and path.stem in iris_rows)
        and dataset / "hf" not in path.parents
    }
    database = {p for p in rewritten if p.name.startswith("iris.db")}
    assert rewritten - database == {data / "forget.lock"}  # the sweep's lock is the only new file
    # Her rows are gone; Bob's, which say the very same words, are untouched.
    assert of(rows_with_meta(export_dir, "sft"), ada) == of(rows_with_meta(export_dir, "kto"), ada) == []
    assert of(rows_with_meta(export_dir, "sft"), bob) == of(sft_before, bob)
    assert of(rows_with_meta(export_dir, "kto"), bob) == of(kto_before, bob)
    assert of(rows_with_meta(dataset, "train"), ada) == []
    assert of(rows_with_meta(dataset, "train"), bob) == of(train_before, bob)
    # The export made before the key is found by the old pseudonym.
    legacy_meta = [json.loads(line) for line in (legacy / "sft_meta.jsonl").read_text().splitlines()]
    assert [m["person"] for m in legacy_meta] == ["0123456789abcdef"] * len(of(sft_before, bob))
    # The report says what went from where, and what it could not check.
    copies = report.copies
    assert copies is not None
    removed = dict(copies.removed)
    assert removed[str(export_dir.resolve() / "sft.jsonl")] == len(of(sft_before, ada))
    assert removed[str(export_dir.resolve() / "kto.jsonl")] == len(of(kto_before, ada))
    assert removed[str(legacy.resolve() / "sft.jsonl")] == len(of(sft_before, ada))
    assert removed[str(dataset.resolve() / "train.jsonl")] == len(of(train_before, ada))
    assert set(copies.unchecked) == {
        str(export_dir.resolve() / "notes.txt"),
        str(legacy.resolve() / "kto.jsonl"),
        str(legacy.resolve() / "dpo.jsonl"),
    }
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["counts"]["sft"] == len(of(sft_before, bob))
    told = format_forget(report)
    assert "admins have been told" in told and "Traceback" not in told


class CountingEraser(CopyEraser):
    """The real eraser, counting its sweeps."""

    sweeps = 0

    def erase(self, *args: object, **kwargs: object) -> ErasedCopies:
        type(self).sweeps += 1
        return super().erase(*args, **kwargs)  # type: ignore[arg-type]


async def test_forget_cannot_be_used_to_keep_iris_sweeping(app: App) -> None:
    eraser = CountingEraser(app.settings.data_dir, retrain_dir(app.settings))
    CountingEraser.sweeps = 0
    app.service.privacy.copies = eraser
    stranger = Person("telegram", "999", "Eve")

    told_stranger = await app.service.privacy.forget(stranger)
    assert CountingEraser.sweeps == 0 and told_stranger.copies is None
    assert not (app.settings.data_dir / "forget.lock").exists()

    await ask(app, ADA, ADA_ASKS)
    first, second = await asyncio.gather(app.service.privacy.forget(ADA), app.service.privacy.forget(ADA))
    assert CountingEraser.sweeps == 1 and first == second and first.turns == 2

    await ask(app, ADA, BOB_ASKS)
    app.service.privacy._forgot_at.clear()  # as in another process: the audit trail holds the cooldown
    again = await app.service.privacy.forget(ADA)
    assert CountingEraser.sweeps == 1 and again.retry_after_s > 0 and again.turns == 0
    told = format_forget(again)
    assert "again in 10 minutes" in told and "Done" not in told
    assert app.store.stats().user_turns == 1  # nothing deleted yet: she is told when to ask again


async def test_pseudonyms_are_keyed_and_the_key_is_the_deployments(app: App, tmp_path: Path) -> None:
    await app.service.feedback.rate(ADA, await ask(app, ADA, BOB_ASKS), up=True)
    export(app, tmp_path / "out")
    person = json.loads((tmp_path / "out" / "sft_meta.jsonl").read_text().splitlines()[0])["person"]
    key_file = app.settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert person == keyed(app.settings.data_dir, ADA) != legacy_pseudonym(ADA.platform, ADA.user_id)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["pseudonyms"] == "hmac-sha256"
    # Processes starting together agree on one key.
    fresh = tmp_path / "fresh" / KEY_FILE
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: deployment_key(fresh), range(16)))
    assert len(keys) == 1 and [p.name for p in fresh.parent.iterdir()] == [KEY_FILE]


async def test_record_copy_refuses_a_folder_iris_did_not_write(app: App, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(NotACopy):
        record_copy(app.settings.data_dir, home, "feedback export")
    result = iris(app, "feedback", "export", "--out", str(home))
    assert result.returncode == 2 and "did not write" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in home.iterdir()] == ["notes.txt"] and listed_copies(app.settings.data_dir) == []


async def test_retention_takes_the_old_conversations_rows_out_of_the_copies(app: App, tmp_path: Path) -> None:
    for person in (ADA, BOB):
        await app.service.feedback.rate(person, await ask(app, person, "llama"), up=True)
    old = datetime.now(UTC) - timedelta(days=45)
    with app.store.engine.begin() as connection:  # Ada's conversation is old, Bob's is not
        ada_said = (
            select(TurnRow.conversation_id)
            .where(TurnRow.text == "llama")
            .order_by(TurnRow.id)
            .limit(1)
            .scalar_subquery()
        )
        connection.execute(update(TurnRow).where(TurnRow.conversation_id == ada_said).values(created_at=old))
        connection.execute(update(ConversationRow).where(ConversationRow.id == ada_said).values(started_at=old))
    out = tmp_path / "export"
    export(app, out)
    kto_before = rows_with_meta(out, "kto")
    assert len(kto_before) == 2
    app.service.privacy.config = replace(app.service.privacy.config, retention_days=30)

    report = await app.service.privacy.prune()

    assert report is not None and report.conversations == 1
    assert report.copies is not None and dict(report.copies.removed)[str(out.resolve() / "kto.jsonl")] == 1
    bob = keyed(app.settings.data_dir, BOB)
    assert [row for row, _ in rows_with_meta(out, "kto")] == of(kto_before, bob)
