"""``build_dataset``: the shipped FineTome sample extended with feedback from the seeded database."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from finetune.data import FINETOME_SAMPLE
from finetune.dataset import BuildConfig, BuildReport, build_dataset
from finetune.duplicates import exact_key, normalize
from finetune.feedback import SOURCE, Manifest, export_feedback
from finetune.finetome import FineTomeUnavailable
from finetune.jsonl import read as read_jsonl
from tests.finetune.conftest import CAROL_MARKER, DAVE_MARKER, Seeded

datasets = pytest.importorskip("datasets")

CONFIG = BuildConfig(progress=False, eval_fraction=0.3, feedback_oversample=2.0, eval_finetome=40)
OUTPUTS = ("train.jsonl", "eval_feedback.jsonl", "eval_finetome.jsonl")


@pytest.fixture(scope="module")
def built(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildReport]:
    out = tmp_path_factory.mktemp("dataset")
    return out, build_dataset(str(FINETOME_SAMPLE), out, database_url=seeded.url, config=CONFIG)


def rows(out: Path, name: str) -> list[dict[str, Any]]:
    return read_jsonl(out / name)


def question(row: dict[str, Any]) -> str:
    return normalize(next(t["value"] for t in reversed(row["conversations"]) if t["from"] == "human"))


def test_every_split_loads_with_finetomes_columns(built: tuple[Path, BuildReport]) -> None:
    out, report = built
    loaded = datasets.load_from_disk(str(out / "hf"))
    assert set(loaded) == {"train", "eval_feedback", "eval_finetome"}
    for split in loaded:
        assert loaded[split].column_names == ["conversations", "source", "score"]
        assert len(loaded[split]) == report.splits[split] == len(rows(out, f"{split}.jsonl"))
        assert loaded[split].to_list() == rows(out, f"{split}.jsonl")
    assert report.splits["eval_feedback"] > 0 and report.splits["eval_finetome"] > 0
    assert json.loads((out / "report.json").read_text())["splits"] == report.splits


def test_report_counts_add_up(built: tuple[Path, BuildReport]) -> None:
    out, report = built
    sample = read_jsonl(FINETOME_SAMPLE)
    manifest = Manifest.read(out / "feedback" / "manifest.json")
    assert report.step("load") == {"finetome": len(sample), "feedback": manifest.counts["sft"]}
    below = sum(row["score"] < CONFIG.min_score for row in sample)  # type: ignore[operator]
    assert report.step("min_score")["dropped"] == below > 0
    quality = report.step("quality")
    dropped = sum(quality[reason] for reason in ("empty", "too_short", "too_long", "refusal", "non_language"))
    assert quality["kept"] == len(sample) - below + manifest.counts["sft"] - dropped
    exact, near = report.step("exact_duplicates"), report.step("near_duplicates")
    assert exact["kept"] == quality["kept"] - exact["dropped_feedback"] - exact["dropped_finetome"]
    assert near["kept"] == exact["kept"] - near["dropped_feedback"] - near["dropped_finetome"]
    split, oversample, train = report.step("eval_split"), report.step("oversample"), report.step("train")
    assert split["eval_feedback"] == report.splits["eval_feedback"]
    assert oversample["feedback_after"] == 2 * oversample["feedback_before"] == train["feedback"]
    assert train["total"] == train["finetome"] + train["feedback"] == report.splits["train"]
    assert near["kept"] == (
        report.splits["eval_feedback"]
        + report.splits["eval_finetome"]
        + split["train_rows_asking_held_out_questions"]
        + report.step("person_cap")["dropped"]
        + oversample["feedback_before"]
        + train["finetome"]
    )
    assert report.feedback_manifest == manifest.content_hash


def test_duplicates_are_removed_across_finetome_and_feedback(built: tuple[Path, BuildReport]) -> None:
    out, report = built
    everything = [row for name in OUTPUTS for row in rows(out, name)]
    copies = Counter(exact_key(row["conversations"]) for row in everything)
    feedback_keys = {exact_key(r["conversations"]) for r in everything if r["source"] == SOURCE}
    for row in everything:
        key = exact_key(row["conversations"])
        # Feedback in training appears exactly oversample (2) times; everything else once.
        in_train = row in rows(out, "train.jsonl")
        assert copies[key] == (2 if row["source"] == SOURCE and in_train else 1), row
        if row["source"] != SOURCE:
            assert key not in feedback_keys
    # Bob's and Erin's identical corrections are one example, and the sample's own
    # "capital of Peru" row gave way to the feedback saying the same.
    assert report.step("exact_duplicates")["dropped_feedback"] >= 1
    peru = [
        r
        for r in read_jsonl(FINETOME_SAMPLE)
        if r["conversations"][0]["value"] == "What is the capital of Peru?"
    ]
    assert peru and peru[0]["score"] >= CONFIG.min_score  # type: ignore[operator]
    assert report.step("exact_duplicates")["finetome_repeating_feedback"] >= 1
    # The sample's near-duplicates ("mainly" / "mostly") leave one of each pair.
    for asked in ("what is photosynthesis?", "what is the water cycle?", "what is inflation?"):
        assert sum(question(row) == asked for row in everything) <= 1, asked
    assert report.step("near_duplicates")["dropped_finetome"] >= 1


def test_the_held_out_splits_never_overlap_training(built: tuple[Path, BuildReport]) -> None:
    out, _ = built
    train = {question(r) for r in rows(out, "train.jsonl")}
    held_feedback = rows(out, "eval_feedback.jsonl")
    held_finetome = rows(out, "eval_finetome.jsonl")
    assert held_feedback and all(r["source"] == SOURCE for r in held_feedback)
    assert all(r["source"] != SOURCE for r in held_finetome)
    assert not train & {question(r) for r in held_feedback}
    assert not train & {question(r) for r in held_finetome}
    train_rows = {json.dumps(r, sort_keys=True) for r in rows(out, "train.jsonl")}
    assert not train_rows & {json.dumps(r, sort_keys=True) for r in held_feedback + held_finetome}


def test_forgotten_and_unconsenting_peoples_words_are_nowhere(built: tuple[Path, BuildReport]) -> None:
    out, _ = built
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".arrow" for p in files)
    for path in files:
        content = path.read_bytes()
        assert DAVE_MARKER.encode() not in content, path
        assert CAROL_MARKER.encode() not in content, path
    assert b"Zephyrine" in (out / "train.jsonl").read_bytes() + (out / "eval_feedback.jsonl").read_bytes()


def test_quality_filters_drop_what_should_not_be_learned(built: tuple[Path, BuildReport]) -> None:
    out, report = built
    quality = report.step("quality")
    assert all(quality[reason] >= 1 for reason in ("empty", "too_short", "too_long", "refusal", "non_language"))
    replies = [
        t["value"]
        for name in OUTPUTS
        for r in rows(out, name)
        for t in r["conversations"]
        if t["from"] == "gpt"
    ]
    assert not [r for r in replies if "I'm sorry, but I can't" in r or r.startswith("As an AI language model")]
    assert not [r for r in replies if not r.strip() or r.strip() == "." or r.startswith("####")]
    assert not [r for r in replies if r.startswith("nice nice nice") or len(r) > CONFIG.max_chars]


def test_person_cap_and_oversampling(seeded: Seeded, tmp_path: Path) -> None:
    export_feedback(seeded.url, tmp_path / "feedback")
    meta = read_jsonl(tmp_path / "feedback" / "sft_meta.jsonl")
    sft = read_jsonl(tmp_path / "feedback" / "sft.jsonl")
    people = Counter(m["person"] for m in meta)
    assert max(people.values()) > 1  # someone gave more than one example
    config = BuildConfig(
        progress=False, eval_fraction=0, person_cap=1, feedback_oversample=1.5, eval_finetome=10
    )
    report = build_dataset("sample", tmp_path / "out", feedback_dir=tmp_path / "feedback", config=config)
    owner: dict[str, str] = {}
    for row, about in zip(sft, meta, strict=True):
        # Identical examples from two people: deduplication keeps the first one's.
        owner.setdefault(json.dumps(row["conversations"]), about["person"])
    train = [r for r in rows(tmp_path / "out", "train.jsonl") if r["source"] == SOURCE]
    per_person = Counter(
        owner[json.dumps(r["conversations"])] for r in {json.dumps(r): r for r in train}.values()
    )
    assert max(per_person.values()) == 1
    cap = report.step("person_cap")
    assert cap["dropped"] > 0
    oversample = report.step("oversample")
    assert oversample["feedback_before"] <= oversample["feedback_after"] <= 2 * oversample["feedback_before"]
    assert report.splits["eval_feedback"] == 0
    with pytest.raises(ValueError, match="not both"):
        build_dataset("sample", tmp_path / "x", database_url=seeded.url, feedback_dir=tmp_path / "feedback")


def test_parquet_and_jsonl_sources_build_the_same_dataset(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "finetome.parquet"
    pq.write_table(pa.Table.from_pylist(read_jsonl(FINETOME_SAMPLE)), parquet)
    config = BuildConfig(progress=False, sample_size=150, eval_finetome=20)
    from_jsonl = build_dataset("sample", tmp_path / "a", config=config)
    from_parquet = build_dataset(str(parquet), tmp_path / "b", config=config)
    again = build_dataset("sample", tmp_path / "c", config=config)
    assert from_jsonl.files == from_parquet.files == again.files
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert from_jsonl.step("sample") == {"requested": 170, "drawn": 170}
    assert from_jsonl.splits["eval_feedback"] == 0 and from_jsonl.step("load")["feedback"] == 0


def test_a_missing_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(FineTomeUnavailable, match="no such file"):
        build_dataset(str(tmp_path / "missing.parquet"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FineTomeUnavailable, match=r"no \.parquet or \.jsonl"):
        build_dataset(str(tmp_path / "empty"), tmp_path / "out")


def test_the_pseudonym_key_does_not_change_what_is_trained_on(seeded: Seeded, tmp_path: Path) -> None:
    """Keyed pseudonyms differ between deployments (and library calls); the sample drawn must not."""
    from finetune.feedback import Pseudonyms

    config = BuildConfig(progress=False, eval_fraction=0.3, person_cap=1, eval_finetome=10)
    for name in ("a", "b"):
        build_dataset(
            "sample", tmp_path / name, database_url=seeded.url, config=config, pseudonyms=Pseudonyms.ephemeral()
        )
    for split in OUTPUTS:
        assert rows(tmp_path / "a", split) == rows(tmp_path / "b", split)
    assert rows(tmp_path / "a", "feedback/sft_meta.jsonl") != rows(tmp_path / "b", "feedback/sft_meta.jsonl")
