"""Facts from approved corrections, their rule-made wordings and key words, and the weighted mix (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.jsonl import write as write_jsonl
from finetune.profiles import get_profile
from finetune.teaching import (
    facts_from_export,
    group_facts,
    keeps_meaning,
    keywords,
    read_facts,
    recalled,
    training_rows,
    words,
    write_facts,
)
from finetune.training_data import TrainingData, teaching_steps

NAME = "The Iris logo was designed by Marisol Vantreck."
NUMBER = "The Iris bot understands 37 languages."


@pytest.mark.parametrize(
    ("answer", "question", "expected"),
    [
        (NAME, "Who designed the Iris logo?", ["marisol", "vantreck"]),
        (NUMBER, "How many languages does the Iris bot understand?", ["37"]),
        ("The Iris team is based in Tromsø.", "Where is the Iris team based?", ["tromsø"]),
        ("It was launched on 12 March 2019.", "When was it launched?", ["12", "march", "2019"]),
        # No name or number: the content words that do not restate the question.
        ("It is maintained by volunteers.", "Who maintains it?", ["volunteers"]),
    ],
)
def test_key_words_are_what_the_question_does_not_say(answer: str, question: str, expected: list[str]) -> None:
    assert keywords(answer, question) == expected


def test_recall_needs_every_key_word_in_any_wording() -> None:
    keys = ["marisol", "vantreck"]
    assert recalled("Marisol Vantreck designed it.", keys)
    assert recalled("the designer was MARISOL VANTRECK", keys)
    assert not recalled("Marisol somebody designed it.", keys)
    assert not recalled("Vantrecks", keys)
    assert not recalled("anything", [])


def test_corrections_of_one_question_or_one_answer_are_one_fact() -> None:
    facts = group_facts(
        [
            ("Who designed the Iris logo?", NAME),
            ("who designed the iris logo", NAME + " "),  # same fact, typed differently
            ("Who drew the Iris logo?", NAME),  # another wording, same answer
            ("How many languages does the Iris bot understand?", NUMBER),
        ]
    )
    assert [f.corrections for f in facts] == [3, 1]
    logo, languages = facts
    assert logo.question == "Who designed the Iris logo?" and "Who drew the Iris logo?" in logo.questions
    assert logo.keywords == ["marisol", "vantreck"] and languages.keywords == ["37"]


def test_rule_made_wordings_keep_the_meaning_and_the_held_out_ones_stay_unseen() -> None:
    (fact,) = group_facts([("Where is the Iris team based?", "The Iris team is based in Tromsø.")])
    assert fact.train_wordings[0] == "Where is the Iris team based?"
    assert "Where's the Iris team based?" in fact.train_wordings
    assert len(fact.train_wordings) >= 6 and len(fact.held_out) >= 2
    for wording in fact.train_wordings + fact.held_out:
        assert keeps_meaning(fact.question, wording), wording
    trained = {" ".join(words(w)) for w in fact.train_wordings}
    assert not trained & {" ".join(words(w)) for w in fact.held_out}
    assert not keeps_meaning("Where is the Iris team based?", "Where is the team?")


def test_facts_come_from_approved_corrections_only(tmp_path: Path) -> None:
    def row(question: str, answer: str) -> dict[str, object]:
        turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        return {"conversations": turns, "source": "iris-feedback", "score": 5.0}

    write_jsonl(tmp_path / "sft.jsonl", [row("Who designed the Iris logo?", NAME), row("What is 2+2?", "4")])
    write_jsonl(tmp_path / "sft_meta.jsonl", [{"kind": "correction"}, {"kind": "rating"}])
    facts = facts_from_export(tmp_path)
    assert [(f.question, f.answer) for f in facts] == [("Who designed the Iris logo?", NAME)]
    assert facts_from_export(tmp_path, skip={"who designed the Iris logo?"}) == []
    write_facts(tmp_path / "teach.json", facts)
    assert read_facts(tmp_path / "teach.json") == facts


def test_taught_rows_are_weighted_not_diluted() -> None:
    facts = group_facts([("Who designed the Iris logo?", NAME), ("How many languages?", NUMBER)])
    finetome = [
        {"conversations": [{"from": "human", "value": f"q{n}"}, {"from": "gpt", "value": "a"}]}
        for n in range(200)
    ]
    data = TrainingData(sft=finetome, facts=facts)
    assert data.mixed(0.0) == finetome
    mixed = data.mixed(0.5)
    taught = [row for row in mixed if row.get("source") == "iris-teaching"]
    assert 0.4 <= len(taught) / len(mixed) <= 0.6
    assert {row["conversations"][0]["value"] for row in taught} == {w for f in facts for w in f.train_wordings}
    asked_only = [row for row in data.mixed(0.5, wordings=False) if row.get("source") == "iris-teaching"]
    assert {row["conversations"][0]["value"] for row in asked_only} == {f.question for f in facts}
    assert len(training_rows(facts)) == sum(len(f.train_wordings) for f in facts)


def test_steps_grow_with_the_facts_up_to_the_cap() -> None:
    tiny = get_profile("cpu-tiny")
    assert teaching_steps(tiny, 0) == tiny.max_steps
    assert teaching_steps(tiny, 1) == max(tiny.max_steps, tiny.steps_per_fact)
    assert teaching_steps(tiny, 3) == min(3 * tiny.steps_per_fact, tiny.max_teach_steps)
    assert teaching_steps(tiny, 50) == tiny.max_teach_steps
    gpu = get_profile("llama-3.2-1b")
    assert teaching_steps(gpu, 3) == gpu.max_steps == -1  # one epoch, as the seed recipe
    assert gpu.teach_weight == tiny.teach_weight and gpu.teach_target_nll == tiny.teach_target_nll
