"""FineTome extended with Iris feedback: one training set and two held-out evaluation sets.

Run it::

    iris dataset build --finetome sample --out data/dataset
    iris dataset build --finetome mlabonne/FineTome-100k --out data/dataset   # with network
    iris dataset build --finetome ~/FineTome-100k/train.parquet --out data/dataset

or from Python: ``build_dataset("sample", Path("data/dataset"), database_url=...)``.

The steps, each counted in ``report.json``:

1. load FineTome (a Hub name, a local parquet/JSONL file or folder, or ``sample``
   for the shipped one) and the feedback SFT rows (an export folder, or a fresh
   export from the database); malformed rows are dropped;
2. keep FineTome rows with ``score`` ≥ the minimum, then draw the sample (the
   training sample plus the FineTome evaluation slice);
3. quality filters (``finetune.quality``): empty, too short, too long,
   refusal-like and non-language replies;
4. exact, then near-duplicate removal across both sources (``finetune.duplicates``),
   feedback first so that a FineTome row repeating feedback is the one dropped;
5. held-out evaluation: a fraction of the feedback, grouped by question so that
   a question is either held out or trained on, and a FineTome slice; training
   rows asking a held-out question are removed;
6. balancing: at most ``person_cap`` feedback rows per person, then each
   feedback row repeated ``feedback_oversample`` times;
7. shuffle and write ``train.jsonl``, ``eval_feedback.jsonl``,
   ``eval_finetome.jsonl`` (FineTome's shape), ``report.json`` and ``hf/`` (a
   ``datasets.DatasetDict`` saved with ``save_to_disk``). Beside the two splits
   that hold feedback, ``train_meta.jsonl`` and ``eval_feedback_meta.jsonl``
   say, line for line, whose words each row holds (the export's
   ``finetune.rows.RowOwners``; ``{}`` for a FineTome row), so that /forget
   finds a person's rows by who they are.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.files import atomic_write, replacing
from finetune import jsonl
from finetune.config import BuildConfig, FeedbackConfig
from finetune.duplicates import NearDuplicates, exact_key, normalize
from finetune.feedback import SOURCE, Manifest, Pseudonyms
from finetune.finetome import FineTomeSource, load_finetome
from finetune.quality import REASONS, QualityRules, problem
from finetune.rows import FineTomeRow, ShareGptTurn

ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}

T = TypeVar("T")
# The splits that can hold feedback, each with its owners file (``<split>_meta.jsonl``).
OWNED_SPLITS = ("train", "eval_feedback")

DEFAULT_BUILD, DEFAULT_FEEDBACK = BuildConfig(), FeedbackConfig()  # frozen, so sharing them is safe


def quality_rules(config: BuildConfig) -> QualityRules:
    return QualityRules(config.min_chars, config.max_chars, config.drop_refusals, config.drop_non_language)


@dataclass(frozen=True)
class Step:
    name: str
    counts: dict[str, float | None]  # counts, and the threshold or cap a step applied (None: off)


@dataclass(frozen=True)
class BuildReport:
    """What the build did, step by step, and what it wrote (``report.json``)."""

    finetome: str
    feedback: str | None
    steps: list[Step]
    splits: dict[str, int]
    train_sources: dict[str, int]
    files: dict[str, str]
    config: dict[str, Any]
    feedback_manifest: str | None = None

    def step(self, name: str) -> dict[str, float | None]:
        return next(s.counts for s in self.steps if s.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n"


@dataclass
class _Example:
    conversations: list[ShareGptTurn]
    source: str
    score: float
    feedback: bool
    person: str | None = None
    owners: dict[str, Any] = field(default_factory=dict)

    def row(self) -> FineTomeRow:
        return {"conversations": self.conversations, "source": self.source, "score": self.score}

    @property
    def question(self) -> str:
        """The last thing asked: examples sharing it stay on one side of the held-out split."""
        return normalize(next(t["value"] for t in reversed(self.conversations) if t["from"] == "human"))


@dataclass
class _Build:
    config: BuildConfig
    steps: list[Step] = field(default_factory=list)

    def count(self, name: str, **counts: float | None) -> None:
        self.steps.append(Step(name, counts))

    def bar(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=description, total=total, disable=not self.config.progress, leave=False)


def build_dataset(
    finetome: str,
    out_dir: Path,
    *,
    database_url: str | None = None,
    feedback_dir: Path | None = None,
    config: BuildConfig = DEFAULT_BUILD,
    feedback: FeedbackConfig = DEFAULT_FEEDBACK,
    pseudonyms: Pseudonyms | None = None,
) -> BuildReport:
    """Build the training and evaluation sets from FineTome and Iris feedback into ``out_dir``.

    Feedback comes from ``feedback_dir`` (an ``iris feedback export`` folder) or
    is exported from ``database_url`` into ``out_dir/feedback``; with neither,
    the build is FineTome only. ``pseudonyms`` names people in a fresh
    export (see ``finetune.feedback.export_feedback``).
    """
    if database_url is not None and feedback_dir is not None:
        raise ValueError("give database_url or feedback_dir, not both")
    build = _Build(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    # report.json is written last: a build that stops midway (a full disk) must not look complete.
    (out_dir / "report.json").unlink(missing_ok=True)
    manifest_hash = None
    if database_url is not None:
        from finetune.feedback import export_feedback

        feedback_dir = out_dir / "feedback"
        manifest_hash = export_feedback(
            database_url,
            feedback_dir,
            scrub=feedback.scrub,
            consent=feedback.consent,
            context_turns=feedback.context_turns,
            pseudonyms=pseudonyms,
        ).content_hash
    elif feedback_dir is not None and (feedback_dir / "manifest.json").exists():
        manifest_hash = Manifest.read(feedback_dir / "manifest.json").content_hash

    loaded = load_finetome(finetome)
    finetome_rows = _sample_finetome(build, loaded)
    feedback_rows = _load_feedback(feedback_dir) if feedback_dir is not None else []
    finetome_kept = _normalized(build, finetome_rows, feedback=False)
    feedback_kept = _normalized(build, feedback_rows, feedback=True)
    build.steps.insert(0, Step("load", {"finetome": loaded.size, "feedback": len(feedback_rows)}))
    build.count(
        "malformed",
        finetome_dropped=len(finetome_rows) - len(finetome_kept),
        feedback_dropped=len(feedback_rows) - len(feedback_kept),
    )

    examples = _filter_quality(build, [*feedback_kept, *finetome_kept])
    examples = _drop_exact_duplicates(build, examples)
    examples = _drop_near_duplicates(build, examples)
    train, eval_feedback, eval_finetome = _split(build, examples)
    train = _balance(build, train)
    random.Random(config.seed).shuffle(train)
    build.count(
        "train",
        finetome=sum(not e.feedback for e in train),
        feedback=sum(e.feedback for e in train),
        total=len(train),
    )
    splits = {"train": train, "eval_feedback": eval_feedback, "eval_finetome": eval_finetome}
    files = _write(build, out_dir, splits)
    report = BuildReport(
        finetome=finetome,
        feedback=str(feedback_dir) if feedback_dir is not None else None,
        steps=build.steps,
        splits={name: len(rows) for name, rows in splits.items()},
        train_sources=dict(sorted(Counter(e.source for e in train).items())),
        files=files,
        config=asdict(config),
        feedback_manifest=manifest_hash,
    )
    atomic_write(out_dir / "report.json", report.to_json().encode())
    return report


# --- loading --------------------------------------------------------------------------


def _sample_finetome(build: _Build, source: FineTomeSource) -> list[dict[str, Any]]:
    config = build.config
    indices = list(range(source.size))
    if config.min_score is not None:
        indices = [i for i in indices if (s := source.scores[i]) is None or s >= config.min_score]
    build.count("min_score", threshold=config.min_score, dropped=source.size - len(indices), kept=len(indices))
    random.Random(config.seed).shuffle(indices)
    wanted = None if config.sample_size is None else config.sample_size + config.eval_finetome
    drawn = indices if wanted is None else indices[:wanted]
    build.count("sample", requested=wanted, drawn=len(drawn))
    return source.rows(drawn)


def _load_feedback(folder: Path) -> list[dict[str, Any]]:
    rows = jsonl.read(folder / "sft.jsonl")
    meta = jsonl.read(folder / "sft_meta.jsonl", missing_ok=True)
    if len(meta) != len(rows):
        meta = [{}] * len(rows)
    return [
        {**row, "_person": m.get("person"), "_owners": _owners(m)} for row, m in zip(rows, meta, strict=True)
    ]


def _owners(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The owners of an export row; an export made before they were written names its person only."""
    if "people" in meta:
        return {key: meta[key] for key in ("people", "turns", "conversation") if key in meta}
    return {"people": [meta["person"]]} if meta.get("person") else {}


def _normalized(build: _Build, rows: Sequence[Mapping[str, Any]], *, feedback: bool) -> list[_Example]:
    """FineTome and feedback rows as read (any shape) → checked examples; malformed rows are left out."""
    kept = []
    for row in build.bar(rows, "reading feedback" if feedback else "reading FineTome"):
        turns = row.get("conversations")
        if not isinstance(turns, list) or not turns:
            continue
        try:
            conversations: list[ShareGptTurn] = [
                {"from": ROLES[turn["from"]], "value": str(turn["value"])} for turn in turns
            ]
        except (KeyError, TypeError):
            continue
        score = row.get("score")
        kept.append(
            _Example(
                conversations=conversations,
                source=str(row.get("source") or (SOURCE if feedback else "finetome")),
                score=float(score) if isinstance(score, int | float) else 0.0,
                feedback=feedback,
                person=row.get("_person"),
                owners=row.get("_owners") or {},
            )
        )
    return kept


# --- cleaning ----------------------------------------------------------------------------


def _filter_quality(build: _Build, examples: list[_Example]) -> list[_Example]:
    reasons: Counter[str] = Counter()
    kept = []
    for example in build.bar(examples, "quality filters"):
        reason = problem(example.conversations, quality_rules(build.config))
        if reason is None:
            kept.append(example)
        else:
            reasons[f"{reason}_{'feedback' if example.feedback else 'finetome'}"] += 1
    counts = {reason: reasons[f"{reason}_finetome"] + reasons[f"{reason}_feedback"] for reason in REASONS}
    counts.update(
        dropped_feedback=sum(n for key, n in reasons.items() if key.endswith("_feedback")),
        kept=len(kept),
    )
    build.count("quality", **counts)
    return kept


def _drop_exact_duplicates(build: _Build, examples: list[_Example]) -> list[_Example]:
    seen: dict[str, bool] = {}
    kept, dropped = [], Counter[str]()
    for example in build.bar(examples, "exact duplicates"):
        key = exact_key(example.conversations)
        if key in seen:
            dropped[_pair(seen[key], example.feedback)] += 1
            continue
        seen[key] = example.feedback
        kept.append(example)
    build.count("exact_duplicates", **_duplicate_counts(dropped), kept=len(kept))
    return kept


def _drop_near_duplicates(build: _Build, examples: list[_Example]) -> list[_Example]:
    threshold = build.config.near_duplicate
    if threshold >= 1:
        build.count("near_duplicates", threshold=threshold, **_duplicate_counts(Counter()), kept=len(examples))
        return examples
    index = NearDuplicates(threshold, seed=build.config.seed)
    kept, dropped = [], Counter[str]()
    # Feedback comes first in `examples`, so it is FineTome that gives way.
    for example in build.bar(examples, "near duplicates"):
        if index.add(example.conversations):
            kept.append(example)
        else:
            dropped["feedback" if example.feedback else "finetome"] += 1
    build.count(
        "near_duplicates",
        threshold=threshold,
        dropped_feedback=dropped["feedback"],
        dropped_finetome=dropped["finetome"],
        kept=len(kept),
    )
    return kept


def _pair(first_is_feedback: bool, again_is_feedback: bool) -> str:
    return (
        "feedback"
        if again_is_feedback
        else ("finetome_repeating_feedback" if first_is_feedback else "finetome")
    )


def _duplicate_counts(dropped: Counter[str]) -> dict[str, int]:
    return {
        "dropped_feedback": dropped["feedback"],
        "dropped_finetome": dropped["finetome"] + dropped["finetome_repeating_feedback"],
        "finetome_repeating_feedback": dropped["finetome_repeating_feedback"],
    }


# --- splitting and balancing --------------------------------------------------------------


def _split(build: _Build, examples: list[_Example]) -> tuple[list[_Example], list[_Example], list[_Example]]:
    config = build.config
    feedback = [e for e in examples if e.feedback]
    finetome = [e for e in examples if not e.feedback]
    held_questions = _held_out_questions(feedback, config.eval_fraction, config.seed)
    eval_feedback = [e for e in feedback if e.question in held_questions]
    # The FineTome slice comes from the shuffled sample, before training takes the rest,
    # and never takes more than a quarter of it.
    slice_size = min(config.eval_finetome, len(finetome) // 4)
    eval_finetome = finetome[:slice_size]
    held_questions |= {e.question for e in eval_finetome}
    candidates = [e for e in feedback if e.question not in held_questions] + finetome[slice_size:]
    train = [e for e in candidates if e.question not in held_questions]
    build.count(
        "eval_split",
        eval_feedback=len(eval_feedback),
        eval_finetome=len(eval_finetome),
        questions_held_out=len(held_questions),
        train_rows_asking_held_out_questions=len(candidates) - len(train),
    )
    return train, eval_feedback, eval_finetome


def _held_out_questions(feedback: list[_Example], fraction: float, seed: int) -> set[str]:
    questions = sorted({e.question for e in feedback})
    if fraction <= 0 or len(questions) < 2:
        return set()
    # Rounded, not at least one: with three questions, holding one out would cost a third of the lessons.
    wanted = min(int(fraction * len(questions) + 0.5), len(questions) - 1)

    def rank(question: str) -> str:
        # A stable draw: a question held out today stays held out as feedback grows.
        return hashlib.sha256(f"{seed}:{question}".encode()).hexdigest()

    return set(sorted(questions, key=rank)[:wanted])


def _balance(build: _Build, train: list[_Example]) -> list[_Example]:
    config = build.config
    rng = random.Random(config.seed)
    feedback = [e for e in train if e.feedback]
    finetome = [e for e in train if not e.feedback]
    by_person: dict[str | None, list[_Example]] = defaultdict(list)
    for example in feedback:
        by_person[example.person].append(example)
    capped: list[_Example] = []
    # In the order people first appear in the export (the database's), not by pseudonym: a keyed
    # pseudonym differs between deployments, and the sample drawn must not.
    for person, rows in by_person.items():
        if config.person_cap > 0 and person is not None and len(rows) > config.person_cap:
            rows = sorted(rng.sample(rows, len(rows)), key=lambda e: -e.score)[: config.person_cap]
        capped.extend(rows)
    build.count(
        "person_cap",
        cap=config.person_cap,
        people=len(by_person),
        dropped=len(feedback) - len(capped),
    )
    ratio = max(config.feedback_oversample, 0.0)
    whole, part = math.floor(ratio), ratio - math.floor(ratio)
    oversampled = [e for e in capped for _ in range(whole + (rng.random() < part))]
    build.count("oversample", ratio=ratio, feedback_before=len(capped), feedback_after=len(oversampled))
    return finetome + oversampled


# --- writing ---------------------------------------------------------------------------


def features() -> Any:
    """FineTome's columns as ``datasets`` features (empty splits keep them too)."""
    from datasets import Features, Value

    return Features(
        {
            "conversations": [{"from": Value("string"), "value": Value("string")}],
            "source": Value("string"),
            "score": Value("float64"),
        }
    )


def _write(build: _Build, out_dir: Path, splits: dict[str, list[_Example]]) -> dict[str, str]:
    files = {}
    for name, examples in build.bar(splits.items(), "writing", total=len(splits)):
        files[f"{name}.jsonl"] = jsonl.write(out_dir / f"{name}.jsonl", (e.row() for e in examples))
        if name in OWNED_SPLITS:
            jsonl.write(out_dir / f"{name}_meta.jsonl", (e.owners for e in examples))
    with _datasets_progress(build.config.progress), replacing(out_dir / "hf") as partial:
        partial.mkdir(mode=0o700)  # the Arrow copy holds people's words, as the 0600 JSONL beside it does
        _save(splits, partial)
    return files


def _save(splits: dict[str, list[_Example]], hf: Path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {
            # from_dict, not from_list: an empty split must keep FineTome's columns.
            name: Dataset.from_dict(
                {
                    "conversations": [e.conversations for e in examples],
                    "source": [e.source for e in examples],
                    "score": [e.score for e in examples],
                },
                features=features(),
            )
            for name, examples in splits.items()
        }
    ).save_to_disk(
        str(hf),
        # With no row, datasets writes no shard and cannot load the split again; ask for one.
        num_shards={name: 1 for name, examples in splits.items() if not examples},
    )


@contextmanager
def _datasets_progress(show: bool) -> Iterator[None]:
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not show:
        disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            enable_progress_bars()
