"""Which teaching means matter: one built dataset, several recipes, each scored the same way.

Each variant trains a LoRA from the same dataset folder (a retrain run's
``dataset/``, with its ``teach.json``), exports the GGUF and asks it, with
llama.cpp at temperature 0, every taught question, the given rephrasings
(never trained on) and the general-knowledge probe::

    python -m finetune.ablation DATASET_DIR LESSONS.json OUT_DIR [VARIANT ...]
    python -m finetune.ablation score MODEL.gguf LESSONS.json

``LESSONS.json`` is a list of ``{"answer": …, "asked": [...], "rephrasings": [...]}``.
Variants (see ``VARIANTS``): ``diluted`` (the first recipe: 60 steps, feedback as
it comes), ``weighted`` (taught answers are half the rows, the asked questions
only), ``wordings`` (also the rule-made rephrasings), ``target`` (the default:
steps scaled to the facts, early stop), ``dpo`` (the default then DPO on the
correction pairs). Results go to ``OUT_DIR/ablation.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TypedDict, cast

from finetune import jsonl
from finetune.probe import grade, load_probe
from finetune.profiles import get_profile
from finetune.scoring import answers
from finetune.teaching import keywords, read_facts, recalled


class Lesson(TypedDict):
    """One entry of LESSONS.json: a taught answer, the questions it was asked with, and paraphrases."""

    answer: str
    asked: list[str]
    rephrasings: list[str]


VARIANTS: dict[str, dict[str, Any]] = {
    "diluted": {"teach_weight": 0.0, "steps_per_fact": 0, "teach_target_nll": 0.0},
    "weight50": {"teach_weight": 0.5},
    "weight25": {"teach_weight": 0.25},
    "weighted": {"teach_wordings": False, "steps_per_fact": 0, "teach_target_nll": 0.0},
    "wordings": {"steps_per_fact": 0, "teach_target_nll": 0.0},
    "target": {},
    "dpo": {"objective": "sft+dpo"},
}


def run_variant(name: str, dataset: Path, lessons: list[Lesson], out: Path, base_cache: Path) -> dict[str, Any]:
    from finetune.export import export_gguf, merge_adapter
    from finetune.training import train
    from finetune.training_data import TrainingData

    profile = get_profile("cpu-tiny").with_overrides(**VARIANTS[name])
    data = TrainingData.from_files(
        dataset / "train.jsonl",
        dpo=dataset / "feedback" / "dpo.jsonl",
        held_out=jsonl.read_finetome(dataset / "eval_feedback.jsonl", missing_ok=True),
        facts=read_facts(dataset / "teach.json"),
    )
    work = out / name
    shutil.rmtree(work, ignore_errors=True)
    began = time.perf_counter()
    trained = train(profile, data, work / "train", base_cache=base_cache, threads=2, progress=print)
    train_seconds = time.perf_counter() - began
    merged = merge_adapter(
        trained.base, trained.adapter_dir, work / "merged", backend="trl", max_seq_length=512
    )
    gguf = export_gguf(merged.path, work, name, "q8_0", progress=print)
    shutil.rmtree(merged.path, ignore_errors=True)
    shutil.rmtree(work / "train", ignore_errors=True)
    result: dict[str, Any] = {
        "variant": name,
        "steps": trained.steps,
        "train_seconds": round(train_seconds, 1),
        "facts": score_lessons(gguf, lessons),
        "probe": grade(load_probe(), answers(gguf, [q.question for q in load_probe()], 32)).to_dict(),
    }
    return result


def score_lessons(gguf: str | Path, lessons: list[Lesson]) -> list[dict[str, Any]]:
    scored = []
    for lesson in lessons:
        keys = keywords(lesson["answer"], " ".join(lesson["asked"]))
        questions = [lesson["asked"][0], *lesson["rephrasings"]]
        replies = answers(gguf, questions, 48)
        scored.append(
            {
                "question": questions[0],
                "recalled": recalled(replies[0], keys),
                "rephrasings_recalled": sum(recalled(r, keys) for r in replies[1:]),
                "answers": dict(zip(questions, replies, strict=True)),
            }
        )
    return scored


def score_only(gguf: Path, lessons: list[Lesson]) -> dict[str, Any]:
    """``python -m finetune.ablation score GGUF LESSONS.json``: a model already made, scored the same way."""
    probe = load_probe()
    return {
        "gguf": str(gguf),
        "facts": score_lessons(gguf, lessons),
        "probe": grade(probe, answers(gguf, [q.question for q in probe], 32)).to_dict(),
    }


def _lessons(path: Path) -> list[Lesson]:
    return cast(list[Lesson], json.loads(path.read_text(encoding="utf-8")))


def main() -> None:
    if sys.argv[1] == "score":
        print(json.dumps(score_only(Path(sys.argv[2]), _lessons(Path(sys.argv[3]))), indent=1))
        return
    dataset, lessons_file, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    names = sys.argv[4:] or list(VARIANTS)
    lessons = _lessons(lessons_file)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "ablation.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in names:
        results[name] = run_variant(name, dataset, lessons, out, out / "base-cache")
        results_file.write_text(json.dumps(results, indent=1, ensure_ascii=False))
        row = results[name]
        print(
            f"{name}: {row['steps']} steps {row['train_seconds']} s; "
            + "; ".join(
                f"{f['question']!r} {f['recalled']} {f['rephrasings_recalled']}/3" for f in row["facts"]
            )
            + f"; probe {row['probe']['right']}/{row['probe']['total']}"
        )


if __name__ == "__main__":
    main()
