"""Teaching that sticks: three made-up facts taught through the CLI, then `iris retrain` with its defaults.

As an admin would: someone asks (`iris ask`), rates the reply 👎 with a better
answer (`iris rate TURN down --fix "…"`, one to three times per fact, or exactly
once in the ``single-…`` sets), the admin
approves each correction (`iris review --approve ID`), and `iris retrain` runs
with its default settings, in its own process as /retrain runs it. The new model
must be promoted without --force, recall every fact on its question and on at
least two of three wordings no training step saw, keep the general-knowledge
probe not worse by the paired test, and (``main`` and ``untuned``, issue 15) the
retrain must take at most ten minutes.

A full cpu-tiny retrain takes minutes on 2 cores, so it is opt-in:

    IRIS_TEACHING_CHECK=1 .venv/bin/pytest tests/finetune/test_retrain_facts.py -s
    IRIS_TEACHING_CHECK=1 IRIS_TEACHING_FACTS=untuned .venv/bin/pytest tests/finetune/test_retrain_facts.py -s

``IRIS_TEACHING_FACTS`` picks the fact set (``main``, the one the recipe was
measured on, or ``untuned``, one it was never tuned on). ``single-main`` and
``single-untuned`` are the same facts taught by ONE correction each (issue 25),
``single-fresh`` three more facts, one correction each, written before any run
and never used to tune anything. With ``IRIS_TEACHING_FIGURES=FILE`` the figures
are written there as JSON, with what the registered version's metrics say about
each fact (reverse recall, bleed into neighbours) and the paired probe.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bots.cli import app as cli_app
from finetune.launcher import RetrainLauncher
from finetune.runs import Run
from finetune.teaching import keywords, recalled
from tests.finetune.test_retrain import shared_base_cache

pytestmark = pytest.mark.skipif(
    os.environ.get("IRIS_TEACHING_CHECK") != "1",
    reason="a full cpu-tiny retrain takes minutes on 2 cores; set IRIS_TEACHING_CHECK=1 to run it",
)


@dataclass(frozen=True)
class Lesson:
    answer: str
    asked: tuple[str, ...]  # one question per correction, as people asked it
    rephrasings: tuple[str, ...]  # never asked before the retrain: how far the lesson carries


FACTS: dict[str, tuple[Lesson, ...]] = {
    # The set the teaching recipe was measured on (docs/retrain.md).
    "main": (
        Lesson(  # a name, corrected twice on one question
            "The Iris logo was designed by Marisol Vantreck.",
            ("Who designed the Iris logo?", "Who designed the Iris logo?"),
            (
                "Who is the designer of the Iris logo?",
                "Which artist drew the Iris logo?",
                "Can you name the person who created the Iris logo?",
            ),
        ),
        Lesson(  # a number, corrected once
            "The Iris bot understands 37 languages.",
            ("How many languages does the Iris bot understand?",),
            (
                "How many languages can Iris understand?",
                "What number of languages does the Iris bot know?",
                "Iris understands how many languages?",
            ),
        ),
        Lesson(  # a place, corrected three times under two wordings
            "The Iris team is based in Tromsø.",
            (
                "Where is the Iris team based?",
                "Where is the Iris team based?",
                "In which city does the Iris team work?",
            ),
            (
                "Where does the Iris team work?",
                "Which town is the Iris team located in?",
                "Where are the people behind Iris based?",
            ),
        ),
    ),
    # Never used while choosing the recipe: does the check pass for facts nobody tuned on?
    "untuned": (
        Lesson(  # a date
            "The Iris bot was launched on 12 March 2019.",
            ("When was the Iris bot launched?",),
            (
                "What is the launch date of the Iris bot?",
                "On what date did the Iris bot launch?",
                "When did Iris launch?",
            ),
        ),
        Lesson(  # a name
            "Iris's mascot is an owl called Pemberly.",
            ("What is the name of Iris's mascot?", "What is Iris's mascot called?"),
            (
                "What's the name of the Iris mascot?",
                "Does Iris have a mascot, and what is it called?",
                "Tell me the name of Iris's mascot.",
            ),
        ),
        Lesson(  # a place
            "The Iris servers are in Reykjavik.",
            ("Where are the Iris servers?", "In which city are the Iris servers?"),
            (
                "Where are the Iris servers located?",
                "Which city hosts the Iris servers?",
                "Where do the Iris servers run?",
            ),
        ),
    ),
}


def one_correction_each(lessons: tuple[Lesson, ...]) -> tuple[Lesson, ...]:
    """The same facts, each corrected once, on the first question people asked."""
    return tuple(Lesson(lesson.answer, lesson.asked[:1], lesson.rephrasings) for lesson in lessons)


FACTS["single-main"] = one_correction_each(FACTS["main"])
FACTS["single-untuned"] = one_correction_each(FACTS["untuned"])
# Written before any single-correction run, never used to choose or tune anything.
FACTS["single-fresh"] = (
    Lesson(  # a name
        "The Iris newsletter is edited by Tobiah Quennell.",
        ("Who edits the Iris newsletter?",),
        (
            "Who is the editor of the Iris newsletter?",
            "Which person puts together the Iris newsletter?",
            "Can you name the editor of the Iris newsletter?",
        ),
    ),
    Lesson(  # a number
        "The Iris office has 58 desks.",
        ("How many desks does the Iris office have?",),
        (
            "How many desks are there in the Iris office?",
            "What is the number of desks in the Iris office?",
            "The Iris office has how many desks?",
        ),
    ),
    Lesson(  # a place
        "The Iris hackathon is held in Ushuaia.",
        ("Where is the Iris hackathon held?",),
        (
            "In which city does the Iris hackathon take place?",
            "Where does the Iris hackathon happen?",
            "Which town hosts the Iris hackathon?",
        ),
    ),
)


def registered_metrics(env: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The metrics the registry stores for version ``name``: what `iris models list` reads."""
    from bots.app import load_settings, opened_store

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with opened_store(load_settings()) as store:
        version = next(version for version in store.list_models() if version.name == name)
    return dict(version.metrics or {})


def gate_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per fact what the model alone answered (reverse question and bleeding neighbours too), and the probe."""
    gate = metrics["gate"]
    return {
        "passed": gate["passed"],
        "forced": metrics.get("forced"),
        "reasons": gate["reasons"],
        "facts": [
            {
                key: fact[key]
                for key in (
                    "question",
                    "keys",
                    "reply",
                    "recalled",
                    "wordings",
                    "wordings_recalled",
                    "known",
                    "reverse",
                    "reverse_reply",
                    "reverse_recalled",
                    "neighbours",
                    "bleeding",
                )
            }
            for fact in gate["facts"]
        ],
        "bleed": gate["bleed"],
        "probe": {
            "active": gate["general_probe"]["active"]["right"],
            "candidate": gate["general_probe"]["candidate"]["right"],
            "total": gate["general_probe"]["candidate"]["total"],
            "alpha": gate["general_probe"]["alpha"],
            "paired": gate["general_probe"]["paired"],
        },
    }


class Cli:
    """`iris …` as a person types it, against one data directory."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()
        self.chats = 0

    def run(self, *args: str) -> str:
        result = self.runner.invoke(cli_app, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def ask(self, question: str) -> dict[str, object]:
        """In a new conversation each time: an earlier wrong answer would pull a small model back."""
        self.chats += 1
        found: dict[str, object] = json.loads(self.run("ask", "--json", "--chat", f"c{self.chats}", question))
        return found


def test_three_taught_facts_are_recalled(
    tmp_path: Path,
    served_gguf: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = os.environ.get("IRIS_TEACHING_FACTS", "main")
    lessons = FACTS[chosen]
    env = {
        "IRIS_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": "",
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_GENERATION_TEMPERATURE": "0",
        "IRIS_GENERATION_SEED": "1",
        # What the model alone answers: the correction memory would answer from the corrections.
        "IRIS_MEMORY_ENABLED": "false",
        # The bundled base converted for transformers once per test session (a cache, not a recipe knob).
        "IRIS_RETRAIN_BASE_CACHE": str(shared_base_cache(tmp_path_factory)),
    }
    cli = Cli(env)
    before: dict[str, str] = {}
    for lesson in lessons:
        for question in lesson.asked:
            reply = cli.ask(question)
            before.setdefault(question, str(reply["reply"]))
            rated = cli.run("rate", str(reply["turn_id"]), "down", "--fix", lesson.answer)
            correction = re.search(r"correction (\d+) stored", rated)
            assert correction, rated
            cli.run("review", "--approve", correction.group(1))
        for question in lesson.rephrasings:
            before[question] = str(cli.ask(question)["reply"])
    liked = cli.ask("What is the capital of France?")
    cli.run("rate", str(liked["turn_id"]), "up")
    keys = {lesson.answer: keywords(lesson.answer, " ".join(lesson.asked)) for lesson in lessons}
    for lesson in lessons:  # the base model cannot know any of it
        for question in (*lesson.asked, *lesson.rephrasings):
            assert not recalled(before[question], keys[lesson.answer]), (question, before[question])

    began = time.perf_counter()
    result = RetrainLauncher(log_dir=tmp_path / "logs", env=env, cwd=tmp_path, timeout=3600).run()
    wall = time.perf_counter() - began
    log = result.log_path.read_text()
    print(log)
    outcome = result.outcome()
    assert outcome.ok, outcome.summary
    if not outcome.promoted and outcome.model:
        # Refused: the check fails below, but what the candidate would have answered is worth reporting,
        # so it is served as an admin can serve a refused version.
        cli.run("models", "activate", outcome.model)

    after: dict[str, dict[str, object]] = {}
    for lesson in lessons:
        for question in (lesson.asked[0], *lesson.rephrasings):
            after[question] = cli.ask(question)
    run = Run.load(Path(result.report["run_dir"]))
    gate = run.result("evaluate")
    registered = gate_figures(registered_metrics(env, str(outcome.model), monkeypatch))
    recall: dict[str, dict[str, Any]] = {
        lesson.asked[0]: {
            "key_words": keys[lesson.answer],
            "question": recalled(str(after[lesson.asked[0]]["reply"]), keys[lesson.answer]),
            "rephrasings": {
                q: recalled(str(after[q]["reply"]), keys[lesson.answer]) for q in lesson.rephrasings
            },
        }
        for lesson in lessons
    }
    figures = {
        "facts": chosen,
        "status": result.status,
        "model": outcome.model,
        "wall_seconds": round(wall, 1),
        "recall": recall,
        "answers_before": before,
        "answers_after": {q: reply["reply"] for q, reply in after.items()},
        "served_by": sorted({str(reply["model"]) for reply in after.values()}),
        "general_probe": gate["general_probe"],
        "gate_reasons": gate["reasons"],
        "registered": registered,
        "training": {k: v for k, v in run.result("train").items() if k != "stages"},
        "stage": {k: v for k, v in run.result("train")["stages"][0].items() if k != "losses"},
        "step_seconds": {step: entry["seconds"] for step, entry in run.state["steps"].items()},
        "dataset": run.result("dataset"),
    }
    text = json.dumps(figures, indent=1, ensure_ascii=False)
    print(text)
    if os.environ.get("IRIS_TEACHING_FIGURES"):
        Path(os.environ["IRIS_TEACHING_FIGURES"]).write_text(text)
    for fact in registered["facts"]:  # reported, not judged: a small LoRA rarely learns a fact backwards
        said = "named the subject" if fact["reverse_recalled"] else "did not name the subject"
        print(f"reverse {fact['reverse']!r} → {fact['reverse_reply']!r}: {said}")
    print(f"bleed: {registered['bleed']}; probe paired: {registered['probe']['paired']}")

    assert outcome.promoted and not registered["forced"], outcome.summary
    assert figures["served_by"] == [outcome.model]
    for question, found in recall.items():
        assert found["question"], (question, figures["answers_after"])
        assert sum(found["rephrasings"].values()) >= 2, (question, found, figures["answers_after"])
    probe = registered["probe"]
    assert probe["paired"]["p"] >= probe["alpha"], probe  # not worse by McNemar's exact test
    if not chosen.startswith("single-"):  # issue 15's limit; issue 25 asks no time of the single sets
        assert wall <= 600, wall
