"""The copies of people's words that Iris writes outside its database, and taking a person out of them.

Feedback exports (``iris feedback export --out DIR``), built datasets (``iris
dataset build --out DIR``) and retrain runs (``<retrain dir>/runs/NAME/``, with
their ``dataset/`` and ``dataset/feedback/``) hold people's questions and
corrections as JSONL, JSON, Markdown and Arrow files. Exports and builds to a
folder of the operator's choosing are listed in ``<data dir>/copies.json`` (the
manifest of where copies went), so that /forget can find them again.

``CopyEraser.erase`` (the ``core.ports.CopyEraser`` the service calls after
deleting the database rows) goes through every listed folder, the retrain
runs and the rest of the data directory, and:

* drops every JSONL row in which one of the person's texts appears (a row of
  ``sft.jsonl`` goes together with its line of ``sft_meta.jsonl``, and an
  export's ``manifest.json`` is recounted);
* replaces such strings in JSON files, and such lines in text files and logs,
  with ``[removed]``;
* deletes a dataset's ``hf/`` folder (the Arrow copy of its JSONL files) once
  its JSONL files changed, and any other small binary file holding a text;
* names the model versions trained on a dataset it changed (a trained model
  cannot unlearn), and marks an unfinished run trained on them as discarded,
  so that ``iris retrain --resume`` does not continue from those weights.

A text matches when it equals a string (ignoring case and spacing, and also in
its scrubbed form) or, for texts of ``MIN_SUBSTRING`` characters and more,
when it appears inside one. Short texts ("yes") match only whole strings, so
that other people's data is not torn apart.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.domain import ErasedCopies, Person
from finetune import jsonl
from finetune.feedback import Manifest, content_hash, export_counts, pseudonym, scrub_text
from finetune.runs import Run

log = logging.getLogger(__name__)

MANIFEST = "copies.json"
MIN_SUBSTRING = 12
REMOVED = "[removed]"
TEXT_SUFFIXES = frozenset({".json", ".md", ".txt", ".log", ".csv", ".yaml", ".yml"})
# Weights, audio, pictures and the database (which the store itself cleans).
SKIPPED_SUFFIXES = frozenset(
    {
        ".gguf",
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".png",
        ".onnx",
        ".lock",
        ".db",
        ".db-wal",
        ".db-shm",
        ".db-journal",
        ".sqlite",
        ".sqlite3",
    }
)
BINARY_SCAN_LIMIT = 64 * 1024 * 1024


def record_copy(data_dir: Path, path: Path, kind: str) -> None:
    """Add a folder Iris wrote people's words to (an export, a dataset) to the data dir's manifest."""
    data_dir.mkdir(parents=True, exist_ok=True)
    entries = listed_copies(data_dir)
    where = str(path.resolve())
    entries = [entry for entry in entries if entry["path"] != where]
    entries.append({"path": where, "kind": kind, "written": datetime.now(UTC).isoformat(timespec="seconds")})
    _atomic_text(data_dir / MANIFEST, json.dumps(entries, indent=1, ensure_ascii=False) + "\n")


def listed_copies(data_dir: Path) -> list[dict[str, str]]:
    """The manifest's entries: ``path``, ``kind`` and when it was ``written``."""
    try:
        entries = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    return [entry for entry in entries if isinstance(entry, dict) and "path" in entry]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


class Words:
    """One person's texts, as found in files (stripped, scrubbed or not, any spacing or case)."""

    def __init__(self, texts: Iterable[str], pseudonyms: Iterable[str] = ()) -> None:
        found = {_norm(form) for text in texts if text.strip() for form in (text, scrub_text(text.strip()))}
        self.whole = {text for text in found if text}
        self.inside = sorted((text for text in self.whole if len(text) >= MIN_SUBSTRING), key=len, reverse=True)
        self.raw = sorted(
            {
                form.strip()
                for text in texts
                for form in (text, scrub_text(text.strip()))
                if len(form.strip()) >= MIN_SUBSTRING
            }
        )
        self.pseudonyms = set(pseudonyms)

    def __bool__(self) -> bool:
        return bool(self.whole or self.pseudonyms)

    def touch(self, value: str) -> bool:
        text = _norm(value)
        return text in self.whole or text in self.pseudonyms or any(word in text for word in self.inside)

    def in_data(self, value: Any) -> bool:
        """Whether a parsed JSON value holds one of the texts anywhere."""
        return any(self.touch(text) for text in _strings(value))

    def redacted(self, value: Any) -> tuple[Any, int]:
        """The JSON value with every touched string replaced, and how many were."""
        if isinstance(value, str):
            return (REMOVED, 1) if self.touch(value) else (value, 0)
        if isinstance(value, list):
            pairs = [self.redacted(item) for item in value]
            return [item for item, _ in pairs], sum(n for _, n in pairs)
        if isinstance(value, dict):
            pairs_by_key = {key: self.redacted(item) for key, item in value.items()}
            return {key: item for key, (item, _) in pairs_by_key.items()}, sum(
                n for _, n in pairs_by_key.values()
            )
        return value, 0

    def in_bytes(self, data: bytes) -> bool:
        lowered = data.lower()
        return any(word.encode().lower() in lowered for word in self.raw)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


@dataclass
class _Sweep:
    words: Words
    files: set[Path] = field(default_factory=set)  # rewritten or deleted
    rows: int = 0
    failed: list[str] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)

    def changed(self, path: Path, rows: int = 0) -> None:
        self.files.add(path)
        self.rows += rows


class CopyEraser:
    """Implements ``core.ports.CopyEraser`` over the data dir, the retrain dir and the listed copies."""

    def __init__(self, data_dir: Path, retrain_dir: Path) -> None:
        self.data_dir = data_dir
        self.retrain_dir = retrain_dir

    def roots(self) -> list[Path]:
        listed = [Path(entry["path"]) for entry in listed_copies(self.data_dir)]
        return [self.data_dir, self.retrain_dir, *listed]

    def erase(self, person: Person | None, texts: Sequence[str]) -> ErasedCopies:
        words = Words(texts, [pseudonym(person.platform, person.user_id)] if person is not None else [])
        if not words:
            return ErasedCopies()
        sweep = _Sweep(words)
        for root in self.roots():
            if root.exists():
                self._sweep(sweep, root)
        trained = self._runs_trained_on(sweep)
        if sweep.failed:
            log.error("could not remove a forgotten person's words from: %s", ", ".join(sweep.failed))
        return ErasedCopies(
            files=len(sweep.files),
            rows=sweep.rows,
            models=tuple(trained),
            unreachable=tuple(sweep.failed),
        )

    # --- walking the folders ---

    def _sweep(self, sweep: _Sweep, root: Path) -> None:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            resolved = path.resolve()
            if resolved in sweep.seen or path.suffix in SKIPPED_SUFFIXES or path.name == MANIFEST:
                continue
            sweep.seen.add(resolved)
            try:
                self._one(sweep, path)
            except (OSError, ValueError) as error:
                log.warning("could not check %s for forgotten words: %s", path, error)
                sweep.failed.append(str(path))
        for dataset in {p.parent for p in sweep.files if p.name == "train.jsonl"}:
            hf = dataset / "hf"
            if hf.is_dir():
                shutil.rmtree(hf)  # Arrow copies of the JSONL files just rewritten
                sweep.changed(hf)

    def _one(self, sweep: _Sweep, path: Path) -> None:
        if path.suffix == ".jsonl":
            if path.name == "sft_meta.jsonl" and (path.parent / "sft.jsonl").exists():
                return  # rewritten together with sft.jsonl
            removed = _rewrite_jsonl(path, sweep.words)
            if removed:
                sweep.changed(path, removed)
                if path.name == "sft.jsonl" and (path.parent / "sft_meta.jsonl").exists():
                    sweep.changed(path.parent / "sft_meta.jsonl")
                if (path.parent / "manifest.json").exists():
                    _recount(path.parent)
            return
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            cleaned, replaced = sweep.words.redacted(data)
            if replaced:
                _atomic_text(path, json.dumps(cleaned, indent=1, ensure_ascii=False) + "\n")
                sweep.changed(path)
            return
        if path.suffix in TEXT_SUFFIXES:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            kept = [REMOVED + "\n" if sweep.words.touch(line) else line for line in lines]
            if kept != lines:
                _atomic_text(path, "".join(kept))
                sweep.changed(path)
            return
        if path.stat().st_size <= BINARY_SCAN_LIMIT and sweep.words.in_bytes(path.read_bytes()):
            path.unlink()
            sweep.changed(path)

    # --- the runs whose models learned from the words ---

    def _runs_trained_on(self, sweep: _Sweep) -> list[str]:
        runs = self.retrain_dir / "runs"
        if not runs.is_dir():
            return []
        changed = {path.resolve() for path in sweep.files}
        names = []
        for state_file in sorted(runs.glob("*/state.json")):
            try:
                run = Run.load(state_file.parent)
            except (OSError, ValueError):
                continue
            state = run.state
            steps = state.get("steps") or {}
            built = steps["dataset"]["result"] if "dataset" in steps else {}
            dataset = Path(built.get("dir") or state_file.parent / "dataset")
            if not any(dataset.resolve() in path.parents for path in changed):
                continue
            trained = "train" in steps or (state_file.parent / "train").exists()
            if not trained:
                continue  # its dataset is clean now, so resuming it trains without the words
            names.append(str(state.get("name") or state_file.parent.name))
            if state.get("status") in ("running", "failed"):
                state["status"] = "discarded"
                state["error"] = "its training data held words a person asked to forget; it cannot be resumed"
                run.save()
        return names


def _rewrite_jsonl(path: Path, words: Words) -> int:
    """Drop the rows holding the words (with their ``sft_meta.jsonl`` lines); return how many."""
    rows = jsonl.read(path)
    meta_path = path.parent / "sft_meta.jsonl"
    paired = path.name == "sft.jsonl" and meta_path.exists()
    meta = jsonl.read(meta_path) if paired else []
    if paired and len(meta) != len(rows):
        meta, paired = [], False
    keep = [
        index
        for index, row in enumerate(rows)
        if not words.in_data(row) and not (paired and words.in_data(meta[index]))
    ]
    removed = len(rows) - len(keep)
    if removed:
        jsonl.write(path, (rows[i] for i in keep))
        if paired:
            jsonl.write(meta_path, (meta[i] for i in keep))
    return removed


def _recount(folder: Path) -> None:
    """Make an export's ``manifest.json`` describe its files again after rows were dropped."""
    import hashlib

    manifest_path = folder / "manifest.json"
    try:
        manifest = Manifest.read(manifest_path)
    except (TypeError, ValueError):
        return  # not a manifest this version wrote
    hashes = {}
    for name in manifest.files:
        file = folder / name
        if file.exists():
            hashes[name] = hashlib.sha256(file.read_bytes()).hexdigest()
    rows = {
        name: jsonl.read(folder / name, missing_ok=True)
        for name in ("sft.jsonl", "sft_meta.jsonl", "kto.jsonl", "dpo.jsonl")
    }
    counts = export_counts(rows["sft.jsonl"], rows["sft_meta.jsonl"], rows["kto.jsonl"], rows["dpo.jsonl"])
    manifest = replace(
        manifest, counts=manifest.counts | counts, files=hashes, content_hash=content_hash(hashes)
    )
    _atomic_text(manifest_path, manifest.to_json())


def _atomic_text(path: Path, text: str) -> None:
    jsonl.replace_file(path, text.encode("utf-8"))
