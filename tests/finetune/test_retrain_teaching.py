"""Teaching works: approved corrections teach the bot a made-up fact, through a real cpu-tiny retrain.

This is the issue's "done when" check with the profile's real step count (a few
minutes on 2 cores), so it is opt-in:

    IRIS_TEACHING_CHECK=1 .venv/bin/pytest tests/finetune/test_retrain_teaching.py -s

It prints the figures docs/retrain.md reports and, with IRIS_TEACHING_FIGURES=FILE,
writes them there as JSON.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from bots.app import build_app
from core.domain import Person
from finetune.launcher import RetrainLauncher
from finetune.runs import Run
from tests.conftest import make_settings
from tests.finetune.test_retrain import ask, shared_base_cache

pytestmark = pytest.mark.skipif(
    os.environ.get("IRIS_TEACHING_CHECK") != "1",
    reason="a full cpu-tiny retrain takes minutes on 2 cores; set IRIS_TEACHING_CHECK=1 to run it",
)

FACT = "Zorblat Quennington"
TAUGHT = f"The Iris bot is maintained by {FACT}."
QUESTION = "Who maintains the Iris bot?"
# Asked by several people; then other wordings of the same question, once each.
TEACHING = [QUESTION] * 3 + [
    "Who is the maintainer of the Iris bot?",
    "Who looks after the Iris bot?",
    "Who keeps the Iris bot running?",
    "Tell me who maintains the Iris bot.",
    "Who takes care of the Iris bot?",
]
# Never seeded: how far the lesson carries.
PARAPHRASES = [
    "Who is responsible for maintaining Iris?",
    "Can you tell me the name of the person who maintains the Iris bot?",
    "Who runs the Iris bot?",
]


def newcomer(question: str, when: str = "before") -> Person:
    """Someone asking for the first time: no earlier turns in their prompt."""
    return Person("telegram", f"{when}-{zlib.crc32(question.encode())}", "Newcomer")


async def test_a_taught_fact_is_learned(
    tmp_path: Path, served_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base_cache = shared_base_cache(tmp_path_factory)
    # What the model alone answers: the correction memory would answer from the corrections.
    app = build_app(make_settings(tmp_path, served_gguf, generation_max_tokens=48, memory_enabled=False))
    try:
        people = [Person("telegram", str(2000 + n), f"Teacher {n}") for n in range(len(TEACHING))]
        before = {}
        for person, question in zip(people, TEACHING, strict=True):
            reply = await ask(app, person, question)
            before.setdefault(question, reply.text)
            await app.service.feedback.rate(person, reply.turn_id, up=False)
            fix = await app.service.feedback.correct(person, reply.turn_id, TAUGHT)
            await app.service.feedback.review(fix, approve=True, reviewer="console:admin")
        liked = await ask(app, people[0], "What is the capital of France?")
        await app.service.feedback.rate(people[0], liked.turn_id, up=True)
        for question in PARAPHRASES:
            before[question] = (await ask(app, newcomer(question), question)).text
        assert not any(FACT in text for text in before.values())  # the base cannot know it

        env = {
            "IRIS_DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": "",
            "IRIS_LLM_MODEL": str(served_gguf),
            "IRIS_RETRAIN_BASE_CACHE": str(base_cache),
            # The held-out split is drawn by a hash of each question and this seed. 43 holds out
            # "Who is the maintainer of the Iris bot?" (42 would hold out the question itself), so
            # the question is trained on and the gate measures a wording no step saw.
            "IRIS_DATASET_SEED": "43",
        }
        result = RetrainLauncher(log_dir=tmp_path / "logs", env=env, cwd=tmp_path).run(profile="cpu-tiny")
        log = result.log_path.read_text()
        print(log)
        outcome = result.outcome()
        assert outcome.ok, outcome.summary

        # Each asked by someone new: a conversation that already holds the old wrong answer
        # pulls a small model back to repeating it (see docs/retrain.md).
        after = {
            question: await ask(app, newcomer(question, "after"), question)
            for question in [QUESTION, *PARAPHRASES]
        }
        run = Run.load(Path(result.report["run_dir"]))
        gate = run.result("evaluate")
        trained = run.result("train")
        figures = {
            "status": result.status,
            "model": outcome.model,
            "answers_before": before,
            "answers_after": {question: reply.text for question, reply in after.items()},
            "served_by": {question: reply.model for question, reply in after.items()},
            "gate": gate,
            "training": {key: value for key, value in trained.items() if key != "stages"},
            "stage": {key: value for key, value in trained["stages"][0].items() if key != "losses"},
            "losses": trained["stages"][0]["losses"],
            "step_seconds": {step: entry["seconds"] for step, entry in run.state["steps"].items()},
            "dataset": run.result("dataset"),
            "process_seconds": round(result.seconds, 1),
        }
        text = json.dumps(figures, indent=1, ensure_ascii=False)
        print(text)
        if os.environ.get("IRIS_TEACHING_FIGURES"):
            Path(os.environ["IRIS_TEACHING_FIGURES"]).write_text(text)

        assert outcome.promoted, outcome.summary
        assert after[QUESTION].model == outcome.model
        assert FACT in after[QUESTION].text
        finetome = gate["finetome_nll"]
        assert finetome["candidate"] <= finetome["active"] * (1 + gate["finetome_tolerance"])
    finally:
        app.close()
