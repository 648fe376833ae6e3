"""The gate with a few taught facts and the general-knowledge probe, on tiny inputs (fast).

The rules are tested on scores made by hand; the probe's grading on written
answers; the probe file itself for its size and shape.
"""

from __future__ import annotations

import pytest

from finetune.data import PROBE
from finetune.gate import GateConfig, decide, judge
from finetune.probe import ProbeQuestion, ProbeScore, grade, is_right, load_probe
from finetune.scoring import FactScore, ModelScores, Score


def fact(nll: float, held: float, recall: bool, question: str = "Who designed the Iris logo?") -> FactScore:
    answer = "Marisol Vantreck designed it." if recall else "A team of designers."
    return FactScore(question, nll, held, answer, recall, 1.0 if recall else 0.0, 2 if recall else 0, 3)


def probe_score(right: int, total: int = 60) -> ProbeScore:
    """A probe graded from answers: the first ``right`` questions answered right, the rest wrong."""
    questions = [ProbeQuestion(f"Question {n}?", ("yes",)) for n in range(total)]
    return grade(questions, ["yes" if n < right else "no" for n in range(total)])


def model(taught: tuple[FactScore, ...], right: int | None = 50, finetome: float | None = None) -> ModelScores:
    probe = probe_score(right) if right is not None else None
    return ModelScores("x.gguf", None, Score(finetome, 10, 2) if finetome else None, 0.1, taught, probe)


BEFORE = (fact(4.0, 4.2, False), fact(3.5, 3.9, False, "How many languages?"))


def test_one_or_two_facts_with_nothing_held_out_can_pass() -> None:
    after = (fact(0.1, 0.3, True), fact(0.2, 0.4, True, "How many languages?"))
    passed, reasons, next_steps = decide(model(after), model(BEFORE), GateConfig())
    assert passed, reasons
    assert not next_steps
    assert any("recalled" in r and "Who designed the Iris logo?" in r for r in reasons)
    assert any("probe 50/60 → 50/60" in r and "no loss shown" in r for r in reasons)


def test_a_fact_not_recalled_is_refused_with_what_to_do() -> None:
    after = (fact(0.1, 0.3, True), fact(0.9, 1.2, False, "How many languages?"))
    passed, reasons, next_steps = decide(model(after), model(BEFORE), GateConfig())
    assert not passed
    assert any("taught facts learned: 1/2" in r for r in reasons)
    assert len(next_steps) == 1 and "'How many languages?'" in next_steps[0]
    assert "more approved corrections" in next_steps[0] and "iris retrain" in next_steps[0]
    # An admin may accept part of it.
    assert decide(model(after), model(BEFORE), GateConfig(recall_share=0.5))[0]


def test_likelihood_must_rise_on_the_held_out_wordings_too() -> None:
    after = (fact(0.1, 5.0, True), fact(0.2, 0.4, True, "How many languages?"))
    passed, reasons, _ = decide(model(after), model(BEFORE), GateConfig(recall_share=0.5))
    assert not passed and any("did not rise" in r for r in reasons)


def test_forgetting_beyond_chance_is_refused_with_what_to_do() -> None:
    """Losing 4 of the 50 known answers and gaining none: p = ½⁴ = 0.0625; 5: p = 0.031 < 0.05."""
    after = (fact(0.1, 0.3, True), fact(0.2, 0.4, True, "How many languages?"))
    config = GateConfig(probe_alpha=0.05)
    assert decide(model(after, right=46), model(BEFORE, right=50), config)[0]
    passed, reasons, next_steps = decide(model(after, right=45), model(BEFORE, right=50), config)
    assert not passed and any("probe 50/60 → 45/60" in r and "worse beyond chance" in r for r in reasons)
    assert any("lost general knowledge" in step and "IRIS_GATE_PROBE_ALPHA" in step for step in next_steps)


def test_the_synthetic_finetome_is_reported_not_judged() -> None:
    after = (fact(0.1, 0.3, True), fact(0.2, 0.4, True, "How many languages?"))
    candidate, active = model(after, finetome=3.0), model(BEFORE, finetome=1.0)
    passed, reasons, _ = decide(candidate, active, GateConfig(), finetome_synthetic=True)
    assert passed and any("synthetic" in r and "not a forgetting check" in r for r in reasons)
    passed, reasons = judge(candidate, active, GateConfig())  # a real FineTome: a rule
    assert not passed and any("beyond the 5% tolerance" in r for r in reasons)


def test_no_evidence_at_all_says_how_to_teach() -> None:
    passed, reasons, next_steps = decide(model(()), model(()), GateConfig())
    assert not passed and any("no held-out feedback and no taught fact" in r for r in reasons)
    assert "iris review" in next_steps[0] and "--fix" in next_steps[0]


def test_the_probe_ships_enough_real_questions() -> None:
    questions = load_probe(PROBE)
    assert len(questions) >= 50
    assert {q.topic for q in questions} >= {"geography", "arithmetic", "science", "language"}
    assert len({q.question for q in questions}) == len(questions)
    assert all(q.answers and all(a.strip() for a in q.answers) for q in questions)


@pytest.mark.parametrize(
    ("reply", "answers", "right"),
    [
        ("The capital of France is Paris.", ("Paris",), True),
        ("paris", ("Paris",), True),
        ("It is Lyon.", ("Paris",), False),
        ("6 times 7 is 42.", ("42", "forty-two"), True),
        ("The answer is 420.", ("42",), False),  # whole words only
        ("Plants take in carbon dioxide.", ("carbon dioxide", "CO2"), True),
        ("Plants take in carbon.", ("carbon dioxide",), False),
    ],
)
def test_probe_answers_are_graded_by_whole_words(reply: str, answers: tuple[str, ...], right: bool) -> None:
    assert is_right(reply, answers) is right


def test_grading_counts_and_names_the_misses() -> None:
    questions = [ProbeQuestion("Capital of France?", ("Paris",)), ProbeQuestion("2 + 2?", ("4", "four"))]
    score = grade(questions, ["Paris.", "Five."])
    assert (score.right, score.total, score.missed) == (1, 2, ["2 + 2?"])
    assert score.summary() == "1/2 right (50%)"
