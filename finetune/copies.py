"""The copies of people's words that Iris writes outside its database, and taking a person's rows out of them.

Feedback exports (``iris feedback export --out DIR``), built datasets (``iris
dataset build --out DIR``) and retrain runs (``<retrain dir>/runs/NAME/dataset``,
with its ``feedback/`` export) hold people's questions and corrections. Each
row Iris writes there has its owners beside it, line for line, in a
``*_meta.jsonl`` file (``finetune.rows.RowOwners``: the pseudonyms of the people
in it, its turn ids, its conversation id). Exports and builds to a folder of the
operator's choosing are listed in ``<data dir>/copies.json``.

``CopyEraser.erase`` (the ``core.ports.CopyEraser`` the service calls after
deleting the database rows) finds a person's rows by who they are, never by
what they said:

* a copy folder is one of Iris's by its own metadata: an export's
  ``manifest.json``, a dataset's ``report.json``; it is found in the listed
  folders, the retrain runs and the data dir;
* in it, only the files Iris wrote are rewritten, and only the rows whose
  owners name the person (keyed or legacy pseudonym), one of their turns or a
  forgotten conversation: other people's rows stay, even when they share words.
  An export's manifest and a dataset's report are recounted, and a dataset's
  ``hf/`` (the Arrow copy of its JSONL files) is saved again from them;
* a retrain run's ``teach.json`` and untaught held-out rows are derived again
  from its cleaned dataset;
* anything else in a copy folder (a file Iris did not write there, a file of
  rows without owners from an older version) may hold a copy: it
  is reported (``ErasedCopies.unchecked``, the log, the audit trail), never
  changed. Model folders, caches, checkpoints and every other file are never
  opened for writing;
* the model versions trained on a dataset it changed are named (a trained
  model cannot unlearn), and an unfinished run trained on them is marked
  discarded, so that ``iris retrain --resume`` does not continue from those weights.

One sweep runs at a time on a data dir (a lock file), whichever process asks.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.domain import ErasedCopies, Person
from finetune import jsonl
from finetune.dataset import OWNED_SPLITS
from finetune.feedback import SOURCE, Manifest, Pseudonyms, content_hash, export_counts, legacy_pseudonym
from finetune.runs import Run

log = logging.getLogger(__name__)

MANIFEST = "copies.json"
LOCK = "forget.lock"
EXPORT_ROWS = ("sft", "kto", "dpo")  # each NAME.jsonl with NAME_meta.jsonl
EXPORT_FILES = frozenset({"manifest.json", *(f"{n}{s}.jsonl" for n in EXPORT_ROWS for s in ("", "_meta"))})
# What a retrain run derives from its dataset and its feedback (``finetune.retrain.taught_facts``):
# made again from them once they changed.
DERIVED = frozenset({"teach.json", "eval_feedback_untaught.jsonl"})
DATASET_FILES = frozenset(
    {
        "report.json",
        "eval_finetome.jsonl",  # FineTome rows only
        "hf",
        "feedback",  # the export it was built from: a copy folder of its own
        *DERIVED,
        *(f"{n}{s}.jsonl" for n in OWNED_SPLITS for s in ("", "_meta")),
    }
)
REPORT_KEYS = frozenset({"finetome", "steps", "splits", "files"})


class NotACopy(ValueError):
    """``record_copy`` was given a folder Iris did not write: /forget must never rewrite it."""


def record_copy(data_dir: Path, path: Path, kind: str) -> None:
    """Add a folder Iris is about to write people's words to (an export, a dataset) to the data dir's manifest.

    Refuses (``NotACopy``) a folder that holds anything but one of Iris's own
    copies: the sweep of /forget trusts this list.
    """
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and _kind(path) is None)):
        raise NotACopy(f"{path} already holds files that Iris did not write; choose a new or empty folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    entries = listed_copies(data_dir)
    where = str(path.resolve())
    entries = [entry for entry in entries if entry["path"] != where]
    entries.append({"path": where, "kind": kind, "written": datetime.now(UTC).isoformat(timespec="seconds")})
    jsonl.replace_file(data_dir / MANIFEST, (json.dumps(entries, indent=1, ensure_ascii=False) + "\n").encode())


def listed_copies(data_dir: Path) -> list[dict[str, str]]:
    """The manifest's entries: ``path``, ``kind`` and when it was ``written``."""
    try:
        entries = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    return [entry for entry in entries if isinstance(entry, dict) and "path" in entry]


def _kind(folder: Path) -> str | None:
    """``export`` or ``dataset`` when the folder holds that copy's own metadata, else None."""
    try:
        if (folder / "sft.jsonl").is_file() and (folder / "manifest.json").is_file():
            Manifest.read(folder / "manifest.json")
            return "export"
        if (folder / "train.jsonl").is_file() and (folder / "report.json").is_file():
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
            return "dataset" if isinstance(report, dict) and report.keys() >= REPORT_KEYS else None
    except (OSError, TypeError, ValueError):
        return None
    return None


@dataclass(frozen=True)
class Forgotten:
    """Whose rows to take out: a person's pseudonyms, their turns, whole conversations."""

    pseudonyms: frozenset[str] = frozenset()
    turns: frozenset[int] = frozenset()
    conversations: frozenset[int] = frozenset()

    def owns(self, owners: Mapping[str, Any]) -> bool:
        """Whether a row with these owners (a line of a ``*_meta.jsonl``) holds what is forgotten."""
        people = {*(owners.get("people") or ()), owners.get("person")}
        turns = owners.get("turns") or ()
        return bool(
            not self.pseudonyms.isdisjoint(people)
            or not self.turns.isdisjoint(t for t in turns if isinstance(t, int))
            or owners.get("conversation") in self.conversations
        )


@dataclass
class _Sweep:
    forgotten: Forgotten
    removed: dict[Path, int] = field(default_factory=dict)  # file → rows dropped (0: rewritten as a whole)
    unchecked: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def unknown(self, path: Path, why: str) -> None:
        log.warning("/forget did not check %s, which may hold a copy of a person's words: %s", path, why)
        self.unchecked.append(path)


class CopyEraser:
    """Implements ``core.ports.CopyEraser`` over the listed copies, the retrain runs and the data dir."""

    def __init__(self, data_dir: Path, retrain_dir: Path) -> None:
        self.data_dir = data_dir
        self.retrain_dir = retrain_dir

    def copy_folders(self) -> list[Path]:
        """Every folder that holds one of Iris's copies (by its own metadata), each once."""
        candidates = [Path(entry["path"]) for entry in listed_copies(self.data_dir)]
        for root in (self.data_dir, self.retrain_dir):
            if root.is_dir():
                candidates += [p.parent for p in root.rglob("manifest.json")]
                candidates += [p.parent for p in root.rglob("report.json")]
        found: dict[Path, None] = {}
        for folder in candidates:
            if folder.is_dir() and _kind(folder) is not None:
                found.setdefault(folder.resolve())
                if (folder / "feedback").is_dir() and _kind(folder / "feedback") == "export":
                    found.setdefault((folder / "feedback").resolve())
        return list(found)

    def erase(
        self, person: Person | None, turn_ids: Collection[int] = (), conversation_ids: Collection[int] = ()
    ) -> ErasedCopies:
        names = set()
        if person is not None:
            keyed = Pseudonyms.of_deployment(self.data_dir)
            names = {keyed(person.platform, person.user_id), legacy_pseudonym(person.platform, person.user_id)}
        forgotten = Forgotten(frozenset(names), frozenset(turn_ids), frozenset(conversation_ids))
        if not (forgotten.pseudonyms or forgotten.turns or forgotten.conversations):
            return ErasedCopies()
        sweep = _Sweep(forgotten)
        with self._one_sweep_at_a_time():
            for folder in self.copy_folders():
                self._sweep_folder(sweep, folder)
            self._derive_again(sweep)
            self._unlisted_leftovers(sweep)
            trained = self._runs_trained_on(sweep)
        if sweep.failed:
            log.error("could not remove a forgotten person's rows from: %s", ", ".join(sweep.failed))
        return ErasedCopies(
            files=len(sweep.removed),
            rows=sum(sweep.removed.values()),
            models=tuple(trained),
            unreachable=tuple(sweep.failed),
            removed=tuple((str(path), rows) for path, rows in sweep.removed.items()),
            unchecked=tuple(str(path) for path in sweep.unchecked),
        )

    @contextmanager
    def _one_sweep_at_a_time(self) -> Iterator[None]:
        """An exclusive lock on ``<data dir>/forget.lock``, across processes: sweeps must not race on files."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # --- one copy folder ---

    def _sweep_folder(self, sweep: _Sweep, folder: Path) -> None:
        kind = _kind(folder)
        try:
            if kind == "export":
                self._sweep_export(sweep, folder)
            elif kind == "dataset":
                self._sweep_dataset(sweep, folder)
        except (OSError, ValueError) as error:
            log.warning("could not take a forgotten person's rows out of %s: %s", folder, error)
            sweep.failed.append(str(folder))

    def _sweep_export(self, sweep: _Sweep, folder: Path) -> None:
        self._report_strangers(sweep, folder, EXPORT_FILES)
        changed = [name for name in EXPORT_ROWS if self._drop_rows(sweep, folder, name)]
        if changed:
            _recount_export(folder)
            sweep.removed.setdefault(folder / "manifest.json", 0)

    def _sweep_dataset(self, sweep: _Sweep, folder: Path) -> None:
        self._report_strangers(sweep, folder, DATASET_FILES)
        changed = [name for name in OWNED_SPLITS if self._drop_rows(sweep, folder, name)]
        if changed:
            _recount_dataset(folder, changed)
            sweep.removed.setdefault(folder / "report.json", 0)
            if (folder / "hf").is_dir():
                _save_arrow(folder)
                sweep.removed.setdefault(folder / "hf", 0)

    def _report_strangers(self, sweep: _Sweep, folder: Path, known: frozenset[str]) -> None:
        for path in sorted(folder.iterdir()):
            if path.name not in known:
                sweep.unknown(path, "Iris did not write it there")

    def _drop_rows(self, sweep: _Sweep, folder: Path, name: str) -> bool:
        """Drop the forgotten rows of ``NAME.jsonl`` and ``NAME_meta.jsonl``; whether any went."""
        rows_path, meta_path = folder / f"{name}.jsonl", folder / f"{name}_meta.jsonl"
        rows = jsonl.read(rows_path, missing_ok=True)
        if not rows:
            return False
        meta = jsonl.read(meta_path, missing_ok=True)
        if len(meta) != len(rows):
            if name in OWNED_SPLITS and not any(row.get("source") == SOURCE for row in rows):
                return False  # FineTome rows only
            sweep.unknown(rows_path, "its rows have no owners beside them (written by an older version)")
            return False
        keep = [i for i, owners in enumerate(meta) if not sweep.forgotten.owns(owners)]
        if len(keep) == len(rows):
            return False
        jsonl.write(rows_path, (rows[i] for i in keep))
        jsonl.write(meta_path, (meta[i] for i in keep))
        sweep.removed[rows_path] = len(rows) - len(keep)
        sweep.removed[meta_path] = len(rows) - len(keep)
        return True

    def _derive_again(self, sweep: _Sweep) -> None:
        """A run's taught facts and untaught held-out rows, made again from its cleaned dataset and export."""
        changed = {path.parent for path, rows in sweep.removed.items() if rows}
        for folder in sorted(changed | {p.parent for p in changed if p.name == "feedback"}):
            if (folder / "teach.json").is_file() and _kind(folder) == "dataset":
                from finetune.retrain import UNTAUGHT, taught_facts
                from finetune.teaching import write_facts

                write_facts(folder / "teach.json", taught_facts(folder))
                sweep.removed.setdefault(folder / "teach.json", 0)
                sweep.removed.setdefault(folder / UNTAUGHT, 0)

    def _unlisted_leftovers(self, sweep: _Sweep) -> None:
        """A listed folder that is no longer (or not yet) a whole copy may hold one: say so."""
        for entry in listed_copies(self.data_dir):
            folder = Path(entry["path"])
            if folder.is_dir() and _kind(folder) is None and any(folder.iterdir()):
                sweep.unknown(folder, "listed as a copy, but without an export's or a dataset's metadata")

    # --- the runs whose models learned from the rows ---

    def _runs_trained_on(self, sweep: _Sweep) -> list[str]:
        runs = self.retrain_dir / "runs"
        if not runs.is_dir():
            return []
        changed = {path.resolve() for path, rows in sweep.removed.items() if rows}
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
                continue  # its dataset is clean now, so resuming it trains without the rows
            names.append(str(state.get("name") or state_file.parent.name))
            if state.get("status") in ("running", "failed"):
                state["status"] = "discarded"
                state["error"] = "its training data held words a person asked to forget; it cannot be resumed"
                run.save()
        return names


def _recount_export(folder: Path) -> None:
    """Make an export's ``manifest.json`` describe its files again after rows were dropped."""
    import hashlib

    manifest_path = folder / "manifest.json"
    manifest = Manifest.read(manifest_path)
    hashes = {}
    for name in manifest.files:
        file = folder / name
        if file.exists():
            hashes[name] = hashlib.sha256(file.read_bytes()).hexdigest()
    rows = {name: jsonl.read(folder / f"{name}.jsonl", missing_ok=True) for name in (*EXPORT_ROWS, "sft_meta")}
    counts = export_counts(rows["sft"], rows["sft_meta"], rows["kto"], rows["dpo"])
    manifest = replace(
        manifest, counts=manifest.counts | counts, files=hashes, content_hash=content_hash(hashes)
    )
    jsonl.replace_file(manifest_path, manifest.to_json().encode())


def _recount_dataset(folder: Path, changed: list[str]) -> None:
    """Make a dataset's ``report.json`` give its splits' sizes and hashes again."""
    import hashlib

    report_path = folder / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    for name in changed:
        data = (folder / f"{name}.jsonl").read_bytes()
        report["splits"][name] = jsonl.count(folder / f"{name}.jsonl")
        report["files"][f"{name}.jsonl"] = hashlib.sha256(data).hexdigest()
    jsonl.replace_file(report_path, (json.dumps(report, ensure_ascii=False, indent=2) + "\n").encode())


def _save_arrow(folder: Path) -> None:
    """Save the dataset's ``hf/`` again from its JSONL files; without ``datasets`` here, remove it."""
    hf = folder / "hf"
    try:
        from datasets import Dataset, DatasetDict

        from finetune.dataset import _datasets_progress, features
    except ModuleNotFoundError:
        shutil.rmtree(hf)
        return
    splits = {}
    for path in sorted(folder.glob("*.jsonl")):
        if path.stem in (*OWNED_SPLITS, "eval_finetome"):
            rows = jsonl.read(path)
            splits[path.stem] = Dataset.from_dict(
                {key: [row[key] for row in rows] for key in ("conversations", "source", "score")},
                features=features(),
            )
    partial = folder / "hf.partial"
    if partial.exists():
        shutil.rmtree(partial)
    with _datasets_progress(False):
        DatasetDict(splits).save_to_disk(
            str(partial), num_shards={name: 1 for name, split in splits.items() if len(split) == 0}
        )
    shutil.rmtree(hf)
    partial.replace(hf)
