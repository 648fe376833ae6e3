"""Anchor rows around a taught fact: never the gate's questions, the base model's own answers (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.anchors import anchor_questions, base_answers, first_sentence, with_anchors
from finetune.lanes import neighbours
from finetune.probe import load_probe
from finetune.teaching import group_facts, read_facts, recalled, training_rows, words, write_facts
from finetune.training_data import TrainingData

PROBE = [q.question for q in load_probe()]
NAME = "The Iris logo was designed by Marisol Vantreck."

# (question, approved answer): every fact shape the retrain checks teach, and a few more.
FACTS = [
    ("Who designed the Iris logo?", NAME),
    ("How many languages does the Iris bot understand?", "The Iris bot understands 37 languages."),
    ("Where is the Iris team based?", "The Iris team is based in Tromsø."),
    ("In which city does the Iris team work?", "The Iris team is based in Tromsø."),
    ("When was the Iris bot launched?", "The Iris bot was launched on 12 March 2019."),
    ("What is the name of Iris's mascot?", "Iris's mascot is an owl called Pemberly."),
    ("Where are the Iris servers?", "The Iris servers are in Reykjavik."),
    ("Who edits the Iris newsletter?", "The Iris newsletter is edited by Tobiah Quennell."),
    ("How many desks does the Iris office have?", "The Iris office has 58 desks."),
    ("Where is the Iris hackathon held?", "The Iris hackathon is held in Ushuaia."),
    ("What is the capital of Iris land?", "Iris land's capital is Florbury."),
    ("Who maintains the Eiffel Tower?", "The Eiffel Tower is maintained by Odile Brasque."),
]


def _norm(text: str) -> str:
    return " ".join(words(text))


@pytest.mark.parametrize(("question", "answer"), FACTS)
def test_no_anchor_is_a_question_the_gate_asks(question: str, answer: str) -> None:
    (fact,) = group_facts([(question, answer)])
    anchors = anchor_questions(question, fact.keywords, PROBE)
    asked = {_norm(q) for q in (*neighbours(question, fact.keywords, PROBE), *PROBE, question, *fact.held_out)}
    assert anchors, question  # every shape here has a form the rules read
    assert not {_norm(q) for q in anchors} & asked
    assert len(anchors) == len(set(anchors))
    # No anchor is about the fact's key words: those would teach the fact, not guard it.
    assert not any(recalled(q, [key]) for q in anchors for key in fact.keywords)


def test_a_question_with_no_readable_form_gets_no_anchors() -> None:
    assert anchor_questions("What about it?", ["x"]) == []


def test_anchors_keep_the_base_answers_and_skip_those_that_give_the_fact_away(tmp_path: Path) -> None:
    facts = group_facts([("Who designed the Iris logo?", NAME)])
    asked: list[str] = []

    def answer(questions: list[str]) -> list[str]:
        asked.extend(questions)
        return [
            "Marisol Vantreck did.",
            "",
            *(f"Base answer {n}. More of it, cut at" for n in range(len(questions) - 2)),
        ]

    (fact,), skipped = with_anchors(facts, answer, PROBE)
    assert skipped == 2  # one names the fact's key words, one is empty
    assert [a["question"] for a in fact.anchors] == asked[2:]
    assert fact.anchors[0]["answer"] == "Base answer 0."
    rows = training_rows([fact])
    anchor_rows = [row for row in rows if row["source"] == "iris-anchor"]
    assert [row["conversations"][0]["value"] for row in anchor_rows] == asked[2:]
    assert len(rows) == len(fact.train_wordings) + len(fact.anchors)
    write_facts(tmp_path / "teach.json", [fact])
    assert read_facts(tmp_path / "teach.json") == [fact]
    # Anchors go with the taught rows into the weighted mix.
    turns = [[{"from": "human", "value": f"q{n}"}, {"from": "gpt", "value": "a"}] for n in range(100)]
    finetome = [{"conversations": conversation} for conversation in turns]
    mixed = TrainingData(sft=finetome, facts=[fact]).mixed(0.5)
    trained = {row["conversations"][0]["value"] for row in mixed if row.get("source") == "iris-anchor"}
    assert trained == set(asked[2:])


def test_an_anchor_target_is_the_base_answers_first_sentence() -> None:
    assert first_sentence("Python 3.12 is out. It was released in") == "Python 3.12 is out."
    assert first_sentence("No full stop here") == "No full stop here"
    assert first_sentence("  Why? Because.  ") == "Why?"


def test_anchor_targets_are_the_base_models_greedy_answers(served_gguf: Path) -> None:
    facts = group_facts([("Who designed the Iris logo?", NAME)])
    (fact,), skipped = with_anchors(facts, base_answers(served_gguf, 24), PROBE)
    assert len(fact.anchors) + skipped == len(anchor_questions(fact.question, fact.keywords, PROBE))
    assert fact.anchors and all(a["answer"].strip() for a in fact.anchors)
    assert not any(recalled(a["answer"], [key]) for a in fact.anchors for key in fact.keywords)
