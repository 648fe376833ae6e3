"""Facts that stay in their lane, and figures that hold still (issue 25).

Rule-made reverse and neighbour questions on several fact shapes; the bleed
rule and McNemar's paired probe test through ``decide`` on scores made by
hand; what a model knows by itself (``known``, ``known_questions``); one run
of the real llama.cpp scoring on the bundled GGUF; and ``iris models list``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from finetune.gate import GateConfig, Verdict, decide, evaluate, known_questions
from finetune.lanes import contrasts, key_entity, neighbours, parse, reverse
from finetune.probe import ProbeQuestion, ProbeScore, grade, load_probe, newcombe_paired, pair
from finetune.scoring import FactScore, ModelScores
from finetune.teaching import group_facts, keywords, recalled

PROBE = [q.question for q in load_probe()]

# (question, approved answer, reverse question, words its reply must name)
SHAPES = [
    (
        "Who designed the Iris logo?",
        "The Iris logo was designed by Marisol Vantreck.",
        "Who is Marisol Vantreck?",
        ["iris", "logo"],
    ),
    (
        "How many languages does the Iris bot understand?",
        "The Iris bot understands 37 languages.",
        "What understands 37 languages?",
        ["iris", "bot"],
    ),
    (
        "Where is the Iris team based?",
        "The Iris team is based in Tromsø.",
        "What is based in Tromsø?",
        ["iris", "team"],
    ),
    (
        "When was the Iris bot launched?",
        "The Iris bot was launched on 12 March 2019.",
        "What was launched on 12 March 2019?",
        ["iris", "bot"],
    ),
    (
        "What is the name of Iris's mascot?",
        "Iris's mascot is an owl called Pemberly.",
        "What is Pemberly?",
        ["iris's", "mascot"],
    ),
    (
        "Which city hosts the Iris servers?",
        "The Iris servers are in Reykjavik.",
        "What is in Reykjavik?",
        ["iris", "servers"],
    ),
    (
        "How many people are in the Iris team?",
        "There are 12 people in the Iris team.",
        "What has 12 people?",
        ["iris", "team"],
    ),
]


@pytest.mark.parametrize(("question", "answer", "asked", "names"), SHAPES)
def test_a_reverse_question_is_made_from_the_answer_by_rules(
    question: str, answer: str, asked: str, names: list[str]
) -> None:
    keys = keywords(answer, question)
    assert reverse(question, answer, keys) == (asked, names)


@pytest.mark.parametrize(("question", "answer", "asked", "names"), SHAPES)
def test_neighbours_ask_the_subject_otherwise_and_another_subject_alike(
    question: str, answer: str, asked: str, names: list[str]
) -> None:
    keys = keywords(answer, question)
    form = parse(question)
    assert form is not None
    near = neighbours(question, keys, PROBE)
    same = [q for q in near if form.subject in q]
    other = [q for q in near if form.subject not in q]
    assert len(same) == 3 and 2 <= len(other) <= 3, near
    assert question not in near and len(set(near)) == len(near)
    assert not any(recalled(q, keys) for q in near)  # a neighbour never gives its answer away
    assert neighbours(question, keys, PROBE) == near  # the same ones every run, for both models
    if form.before.split()[0] in ("Who", "What", "How"):  # the probe has questions of that form
        assert set(near) & set(PROBE)


def test_the_same_subject_is_asked_for_another_kind_of_answer() -> None:
    near = neighbours("Who designed the Iris logo?", ["marisol", "vantreck"], PROBE)
    assert near[:3] == [
        "What colour is the Iris logo?",
        "When was the Iris logo made?",
        "Where can I find the Iris logo?",
    ]
    assert "Who owns the Iris logo?" not in near  # a person again: that answer could be the fact's
    swapped = neighbours("Where are the Iris servers?", ["reykjavik"], PROBE)
    assert "What colour are the Iris servers?" in swapped  # agreement follows the subject
    assert any(q.startswith("Where is ") for q in swapped)  # ... and so does a swapped-in one


def test_the_name_of_a_thing_is_asked_about_the_thing() -> None:
    form = parse("What is the name of Iris's mascot?")
    assert form is not None and form.subject == "Iris's mascot"
    near = neighbours("What is the name of Iris's mascot?", ["owl", "pemberly"], PROBE)
    assert near and not any("the name of Iris's mascot" in q for q in near)  # never "Who owns the name of …?"
    assert "Who owns Iris's mascot?" in near
    assert any(q.startswith("What is the name of the ") for q in near)  # another subject, same form
    # "the number of X" reads no better: no neighbours rather than "When was desks in the Iris office made?"
    assert neighbours("What is the number of desks in the Iris office?", ["58"], PROBE) == []


@pytest.mark.parametrize(
    "question",
    ["Who designed it?", "Tell me about Iris.", "What is it?", "Where are they based?", "Hello", ""],
)
def test_a_question_with_no_clear_subject_gives_nothing_rather_than_garbage(question: str) -> None:
    assert parse(question) is None
    assert neighbours(question, ["marisol"], PROBE) == []
    assert contrasts(question) == []
    assert reverse(question, "Marisol Vantreck designed it.", ["marisol", "vantreck"]) is None


@pytest.mark.parametrize(
    ("question", "subject", "asked"),
    [
        (
            "What is the battery capacity of the Zephra 3 phone?",
            "the Zephra 3 phone",
            "How old is the Zephra 3 phone?",
        ),
        (
            "Who is the captain of the Harrowgate Herons?",
            "the Harrowgate Herons",
            "When were the Harrowgate Herons founded?",
        ),
        (
            "How many rooms does the Brackenfold Hotel have?",
            "the Brackenfold Hotel",
            "How many stars does the Brackenfold Hotel have?",
        ),
        ("What's the wifi code at Tidewell Library?", "Tidewell Library", "Who owns Tidewell Library?"),
        (
            "Who won the 2023 Marlow Bay regatta?",
            "the 2023 Marlow Bay regatta",
            "Who sponsors the 2023 Marlow Bay regatta?",
        ),
    ],
)
def test_contrasts_ask_other_things_about_the_thing_asked_about(
    question: str, subject: str, asked: str
) -> None:
    made = contrasts(question)
    assert asked in made
    assert len(made) >= 30
    assert all(subject in q for q in made)  # the thing, not the attribute ("the battery capacity of …")
    own = " ".join(question.lower().rstrip("?").replace("'s", " is").split())
    assert own not in [" ".join(q.lower().rstrip("?").split()) for q in made]
    assert "Who is the captain of the Harrowgate Herons?" not in contrasts(
        "Who is the captain of the Harrowgate Herons?"
    )


@pytest.mark.parametrize(
    "question",
    [
        "Who designed the {0} {s} logo?",  # format fields in a person's words are kept as words
        "Who designed the " + "very " * 2000 + "big logo?",
        "¿Quién diseñó el logo de Iris?",
        "Who designed the Iris logo?\x00\u202e",
    ],
)
def test_contrasts_of_odd_questions_are_made_literally_or_not_at_all(question: str) -> None:
    made = contrasts(question)
    assert len(made) <= 40
    if made:
        subject = parse(question).subject  # type: ignore[union-attr]
        assert all(subject.split()[-1] in q for q in made)
        assert all("{" not in q or "{0} {s}" in q for q in made)


def test_the_key_entity_is_the_answer_span_that_carries_the_key_words() -> None:
    assert (
        key_entity("The Iris logo was designed by Marisol Vantreck.", ["marisol", "vantreck"])
        == "Marisol Vantreck"
    )
    assert key_entity("It understands 37 languages.", ["37"]) == "37"
    assert key_entity("No key here.", ["37"]) is None


# --- the bleed rule, on scores made by hand -----------------------------------------------


def fact(
    question: str = "Who designed the Iris logo?",
    *,
    recall: bool = True,
    held: int = 3,
    bleeding: int = 0,
    neighbours_asked: int = 5,
) -> FactScore:
    near = tuple(f"Neighbour {n} of {question}" for n in range(neighbours_asked))
    return FactScore(
        question,
        0.1 if recall else 3.0,
        0.2 if recall else 3.2,
        "Marisol Vantreck designed it." if recall else "A designer.",
        recall,
        1.0 if recall else 0.0,
        held,
        3,
        expected="The Iris logo was designed by Marisol Vantreck.",
        keys=("marisol", "vantreck"),
        questions=(question, f"{question} (asked again)"),
        reverse="Who is Marisol Vantreck?",
        reverse_answer="A painter.",
        reverse_recalled=False,
        neighbours=near,
        bleeding=tuple((q, "Marisol Vantreck.") for q in near[:bleeding]),
    )


def probe_score(outcomes: list[bool]) -> ProbeScore:
    questions = [ProbeQuestion(f"Question {n}?", ("yes",)) for n in range(len(outcomes))]
    return grade(questions, ["yes" if right else "no" for right in outcomes])


def scores(taught: tuple[FactScore, ...], probe: ProbeScore | None = None) -> ModelScores:
    return ModelScores("x.gguf", None, None, 0.1, taught, probe)


BEFORE = (fact(recall=False, held=0), fact("How many languages?", recall=False, held=0))


@pytest.mark.parametrize(
    ("bled", "active_bled", "passed"),
    [(3, 0, False), (2, 0, True), (3, 4, True), (0, 0, True)],
)
def test_taught_answers_that_bleed_into_neighbours_are_refused(
    bled: int, active_bled: int, passed: bool
) -> None:
    """10 neighbours asked: 3 bleeding is 30 % > 20 % allowed; the active model's share is the floor."""
    after = (fact(bleeding=bled), fact("How many languages?"))
    before = (fact(recall=False, held=0, bleeding=active_bled), BEFORE[1])
    ok, reasons, next_steps = decide(scores(after), scores(before), GateConfig(max_bleed=0.2))
    assert ok is passed, reasons
    said = next(r for r in reasons if r.startswith("neighbour questions given a taught answer"))
    assert f"{bled}/10 ({bled * 10}%; active model {active_bled * 10}%" in said
    assert ("beyond" in said) is not passed
    assert any("What to do next" in s or "taught answers to questions" in s for s in next_steps) is not passed
    if not passed:
        assert "'Neighbour 0 of Who designed the Iris logo?'" in next_steps[0]
        assert "IRIS_GATE_MAX_BLEED" in next_steps[0] and "iris retrain" in next_steps[0]


def test_reverse_recall_is_reported_not_judged() -> None:
    after = (fact(), fact("How many languages?"))
    passed, reasons, _ = decide(scores(after), scores(BEFORE), GateConfig())
    assert passed
    assert any(r.startswith("reverse questions (reported, not judged): 0/2") for r in reasons)


def test_no_neighbours_means_bleed_not_checked() -> None:
    after = (fact(neighbours_asked=0), fact("How many languages?", neighbours_asked=0))
    passed, reasons, _ = decide(scores(after), scores(BEFORE), GateConfig())
    assert passed and any("bleed not checked" in r for r in reasons)


# --- McNemar's exact test on the paired probe ---------------------------------------------


def probe_pair(both: int, lost: int, gained: int, neither: int) -> tuple[ProbeScore, ProbeScore]:
    """(active, candidate) on the same questions with this 2×2 table."""
    active = [True] * both + [True] * lost + [False] * gained + [False] * neither
    candidate = [True] * both + [False] * lost + [True] * gained + [False] * neither
    return probe_score(active), probe_score(candidate)


@pytest.mark.parametrize(
    ("lost", "gained", "p", "refused"),
    [
        (3, 0, 0.125, False),  # the brief's case: 3 of 40 lost, none gained — ½³, not below 0.05
        (4, 0, 0.0625, False),
        (5, 0, 0.03125, True),
        (6, 2, 37 / 256, False),  # 4 net lost, like 4/0, but answers that flip both ways are noise
        (7, 1, 9 / 256, True),
        (5, 5, 638 / 1024, False),  # the same count right, different questions
    ],
)
def test_the_probe_is_judged_by_mcnemars_exact_test(lost: int, gained: int, p: float, refused: bool) -> None:
    active, candidate = probe_pair(30 - lost, lost, gained, 10 - gained)
    assert active.total == 40
    result = pair(active, candidate)
    assert (result.lost, result.gained, result.questions) == (lost, gained, 40)
    assert result.p == pytest.approx(p) and result.per_question
    assert result.low < result.difference == (gained - lost) / 40 < result.high
    after = (fact(), fact("How many languages?"))
    passed, reasons, next_steps = decide(
        scores(after, candidate), scores(BEFORE, active), GateConfig(probe_alpha=0.05)
    )
    assert passed is not refused, reasons
    said = next(r for r in reasons if r.startswith("general-knowledge probe"))
    assert f"{lost} lost, {gained} gained" in said and f"p {p:.3f}" in said and "95% interval" in said
    assert ("worse beyond chance" in said) is refused
    assert any("lost general knowledge" in step for step in next_steps) is refused


def test_the_paired_figures_go_into_the_metrics() -> None:
    active, candidate = probe_pair(27, 3, 0, 10)
    verdict = Verdict(True, [], scores((fact(),), candidate), scores(BEFORE[:1], active), "q", "a")
    probe = verdict.metrics()["general_probe"]
    assert probe["alpha"] == 0.05 and "tolerance" not in probe
    paired = probe["paired"]
    assert (paired["lost"], paired["gained"], paired["p"], paired["questions"]) == (3, 0, 0.125, 40)
    low, high = paired["interval"]
    assert low < -0.075 < 0 < high  # no loss shown: the interval holds 0, as the test said


def test_the_paired_interval_is_newcombes_square_and_add() -> None:
    """With no correlation to use it is Newcombe's interval for two samples (statsmodels' own code);
    paired answers that agree, as a retrained model's mostly do, make it narrower."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    for table in [(1, 1, 7, 12), (5, 5, 5, 5), (27, 3, 0, 10)]:  # (27, 3, 0, 10): ad - bc = 270 > n/2
        a, b, c, d = table
        n = sum(table)
        unpaired = confint_proportions_2indep(a + c, n, a + b, n, method="newcomb")
        low, high = newcombe_paired(*table)
        if a * d - b * c <= n / 2:
            assert (low, high) == pytest.approx(tuple(unpaired), abs=1e-6)
        else:
            assert unpaired[0] < low < (c - b) / n < high < unpaired[1]


def test_counts_without_answers_are_paired_as_the_fewest_flips() -> None:
    result = pair(ProbeScore(30, 40), ProbeScore(25, 40))
    assert (result.lost, result.gained, result.per_question) == (5, 0, False)


# --- what a model knows by itself ----------------------------------------------------------


@pytest.mark.parametrize(
    ("recall", "held", "wordings", "known"),
    [(True, 2, 3, True), (True, 1, 3, False), (False, 3, 3, False), (True, 1, 1, True), (True, 0, 1, False),
     (True, 0, 0, True), (True, 4, 6, True), (True, 3, 6, False)],
)  # fmt: skip
def test_known_means_its_question_and_two_of_three_unseen_wordings(
    recall: bool, held: int, wordings: int, known: bool
) -> None:
    assert replace(fact(recall=recall, held=held), held_out=wordings).known is known


def test_known_questions_come_from_the_stored_metrics() -> None:
    taught = (fact(held=2), fact("How many languages?", held=1), fact("Where?", recall=False))
    metrics = Verdict(True, [], scores(taught), scores((*BEFORE, BEFORE[0])), "q", "a").metrics()
    entries = metrics["facts"]
    assert [f["known"] for f in entries] == [True, False, False]
    first = entries[0]
    assert first["question"] == "Who designed the Iris logo?" and first["answer"].endswith("Marisol Vantreck.")
    assert first["keys"] == ["marisol", "vantreck"] and first["recalled"] is True
    assert (first["wordings"], first["wordings_recalled"]) == (3, 2)
    assert first["reverse"] == "Who is Marisol Vantreck?" and first["reverse_recalled"] is False
    assert "taught" in metrics and metrics["bleed"]["candidate"]["asked"] == 15
    expected = {"Who designed the Iris logo?", "Who designed the Iris logo? (asked again)"}
    assert known_questions(metrics) == expected
    assert known_questions({"gate": metrics, "training": {}}) == expected  # a version's stored metrics
    assert known_questions({"gate": {"passed": True}}) == set()  # figures from before the facts were kept
    assert known_questions({}) == set()


# --- the real thing: llama.cpp on the bundled GGUF -----------------------------------------


def test_the_base_model_alone_does_not_know_a_made_up_fact(served_gguf: Path, tmp_path: Path) -> None:
    facts = group_facts([("Who designed the Iris logo?", "The Iris logo was designed by Marisol Vantreck.")])
    verdict = evaluate(served_gguf, None, tmp_path / "none.jsonl", tmp_path / "none.jsonl", facts=facts)
    (entry,) = verdict.metrics()["facts"]
    assert entry["recalled"] is False and entry["known"] is False
    assert entry["keys"] == ["marisol", "vantreck"] and entry["wordings"] == len(facts[0].held_out) == 3
    assert entry["reverse"] == "Who is Marisol Vantreck?" and isinstance(entry["reverse_recalled"], bool)
    assert entry["reverse_reply"].strip()
    assert entry["neighbours"] >= 5 and entry["bleeding"] == []  # the base cannot give the name away
    assert verdict.metrics()["bleed"]["candidate"] == {
        "asked": entry["neighbours"],
        "bleeding": 0,
        "share": 0.0,
    }
    assert known_questions(verdict.metrics()) == set()


# --- iris models list ----------------------------------------------------------------------


def test_models_list_shows_how_many_facts_each_version_knows(served_gguf: Path, tmp_path: Path) -> None:
    from storage.database import make_engine
    from storage.repository import SqlStore

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE_URL"))
    }
    env |= {"IRIS_DATA_DIR": str(tmp_path / "data"), "IRIS_LLM_MODEL": str(served_gguf)}
    iris = str(Path(sys.executable).with_name("iris"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([iris, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    assert run("db", "upgrade").returncode == 0
    taught = (fact(held=2), fact("How many languages?", held=0), fact("Where?", recall=False))
    metrics: dict[str, object] = {"gate": Verdict(True, [], scores(taught), None, "q", "a").metrics()}
    SqlStore(make_engine(f"sqlite:///{tmp_path / 'data' / 'iris.db'}")).register_model(
        "retrained", str(served_gguf), None, metrics
    )
    listed = run("models", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line
        for line in listed.stdout.splitlines()
    }
    assert "knows 1/3 " in lines["retrained"]
    assert "knows — " in lines["smollm2-135m-instruct-f16"]  # the bundled base: nothing was taught
