"""The gate on real GGUFs with llama.cpp, and its rules on figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from finetune import jsonl
from finetune.gate import GateConfig, GateFailure, check_answers, evaluate, judge
from finetune.scoring import ModelScores, Score, _Scorer, score_model

PARIS = {"conversations": [{"from": "human", "value": "What is the capital of France?"},
                           {"from": "gpt", "value": "The capital of France is Paris."}]}  # fmt: skip
NONSENSE = {"conversations": [{"from": "human", "value": "What is the capital of France?"},
                              {"from": "gpt", "value": "Purple seventeen banana umbrella."}]}  # fmt: skip


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    jsonl.write(path, rows)
    return path


def test_a_right_answer_is_likelier_than_nonsense(served_gguf: Path) -> None:
    right = score_model(served_gguf, [PARIS], [])
    wrong = score_model(served_gguf, [NONSENSE], [])
    assert right.feedback is not None and wrong.feedback is not None
    assert right.feedback.nll < wrong.feedback.nll
    assert right.feedback.rows == 1 and right.finetome is None


def test_the_answer_tokens_are_what_the_template_puts_after_the_prompt(served_gguf: Path) -> None:
    scorer = _Scorer(served_gguf, GateConfig())
    try:
        prompt, answer = scorer.tokens([{"role": "user", "content": "Hi"}], "Hello there.")
        text = scorer.llm.detokenize(answer, special=True).decode()
        assert text.startswith("Hello there.") and "<|im_end|>" in text  # the end of the turn is scored too
        assert scorer.llm.detokenize(prompt, special=True).decode().endswith("<|im_start|>assistant\n")
    finally:
        scorer.close()


def test_a_long_context_keeps_its_newest_part(served_gguf: Path) -> None:
    long_row = {"conversations": [{"from": "human", "value": "word " * 3000}, *PARIS["conversations"]]}
    score = score_model(served_gguf, [long_row], [], GateConfig(context_tokens=256)).feedback
    assert score is not None and math.isfinite(score.nll) and score.tokens > 0


def test_a_file_that_is_not_a_model_fails_the_first_check(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(GateFailure, match="does not load"):
        check_answers(broken, "Hello?")


def test_the_served_model_answers(served_gguf: Path) -> None:
    assert check_answers(served_gguf, "What is the capital of France?").strip()


def test_a_copy_of_the_active_model_is_not_better(served_gguf: Path, tmp_path: Path) -> None:
    feedback = write_jsonl(tmp_path / "eval_feedback.jsonl", [PARIS])
    finetome = write_jsonl(tmp_path / "eval_finetome.jsonl", [NONSENSE])
    verdict = evaluate(served_gguf, served_gguf, feedback, finetome, active_name="same")
    assert not verdict.passed
    metrics = verdict.metrics()
    assert metrics["feedback_nll"]["candidate"] == metrics["feedback_nll"]["active"]
    assert metrics["finetome_nll"]["rows"] == 1 and metrics["compared_with"] == "same"
    assert any("not better" in reason for reason in verdict.reasons)
    assert metrics["probe"]["answer"].strip()


def test_an_unreadable_active_model_is_no_proof(served_gguf: Path, tmp_path: Path) -> None:
    feedback = write_jsonl(tmp_path / "eval_feedback.jsonl", [PARIS])
    verdict = evaluate(served_gguf, tmp_path / "gone.gguf", feedback, tmp_path / "none.jsonl")
    assert not verdict.passed and "could not be scored" in verdict.reasons[0]


def scores(feedback: float | None, finetome: float | None) -> ModelScores:
    def score(nll: float | None) -> Score | None:
        return Score(nll, 10, 2) if nll is not None else None

    return ModelScores("x.gguf", score(feedback), score(finetome), 0.1)


@pytest.mark.parametrize(
    ("candidate", "active", "passed", "said"),
    [
        ((1.0, 2.0), (2.0, 2.0), True, "within the 5% tolerance"),
        ((1.0, 2.09), (2.0, 2.0), True, "+4.5%"),
        ((1.0, 2.2), (2.0, 2.0), False, "beyond the 5% tolerance"),
        ((2.0, 1.0), (2.0, 2.0), False, "not better"),
        ((None, 1.0), (None, 2.0), False, "no held-out feedback"),
        ((1.0, None), (2.0, None), True, "general quality not checked"),
        ((math.nan, 1.0), (2.0, 2.0), False, "not a number"),
    ],
)
def test_the_rules(
    candidate: tuple[float | None, float | None],
    active: tuple[float | None, float | None],
    passed: bool,
    said: str,
) -> None:
    verdict, reasons = judge(scores(*candidate), scores(*active), GateConfig())
    assert verdict is passed
    assert any(said in reason for reason in reasons), reasons


def test_a_required_gain_must_be_exceeded() -> None:
    config = GateConfig(min_feedback_gain=0.5)
    assert not judge(scores(1.6, 2.0), scores(2.0, 2.0), config)[0]
    assert judge(scores(1.4, 2.0), scores(2.0, 2.0), config)[0]


def test_the_first_model_only_has_to_answer() -> None:
    passed, reasons = judge(scores(1.0, 1.0), None, GateConfig())
    assert passed and "no active model" in reasons[0]
