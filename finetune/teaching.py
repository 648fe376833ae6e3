"""What people taught: approved corrections grouped into facts, their rephrasings and key words.

A *fact* is one thing an admin approved: the questions people asked (one or
more wordings) and the corrected answer. The retrain trains every fact with
extra wordings made by rules (``train_wordings``) and checks it on other
rule-made wordings that no step saw (``held_out``); the gate asks the new
model each question and looks for the answer's key words.

The pipeline writes ``teach.json`` next to the dataset; on its own::

    python -c "from pathlib import Path; from finetune.teaching import facts_from_export; \
print(facts_from_export(Path('data/retrain/runs/NAME/dataset/feedback')))"
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

from core.files import atomic_write
from finetune import jsonl
from finetune.rows import FineTomeRow

# Words that carry no fact: a greedy answer is not asked to repeat them.
STOPWORDS = frozenset(
    """a an the is are was were be been being am do does did of in on at to for from by with and or but
    not no it its it's this that these those there here he she they we you i me my your our their his her
    them us what who whom whose which when where why how as so if then than too very can could will would
    shall should may might must has have had having about into over under up down out off again once
    also just only own same such both each few more most other some any all nor one s t""".split()  # noqa: SIM905
)
# Wordings that keep every content word of a question (checked by `keeps_meaning`).
_TRAIN_WRAPPERS = (
    "{q}",
    "{lower}",
    "Tell me, {first_lower}",
    "Quick question: {q}",
    "{q} Please answer in one sentence.",
    "I'd like to know: {q}",
    "Hey, {first_lower}",
    "Do you know {indirect}?",
)
_HELD_OUT_WRAPPERS = (
    "Can you tell me {indirect}?",
    "Please tell me: {q}",
    "{q} Thanks!",
)
_CONTRACTIONS = (
    ("what is", "what's"),
    ("who is", "who's"),
    ("where is", "where's"),
    ("when is", "when's"),
    ("how is", "how's"),
)


class Anchor(TypedDict):
    """A question near a fact and the base model's own answer to it (``finetune.anchors``)."""

    question: str
    answer: str


@dataclass
class Fact:
    """One taught answer and the wordings it is trained and checked on."""

    answer: str
    questions: list[str]  # as people asked them, most asked first
    corrections: int
    keywords: list[str]
    train_wordings: list[str] = field(default_factory=list)  # questions + rule-made wordings
    held_out: list[str] = field(default_factory=list)  # rule-made wordings no step sees
    anchors: list[Anchor] = field(default_factory=list)  # trained beside it so it stays in its lane

    @property
    def question(self) -> str:
        return self.questions[0]


# --- words ------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case words and numbers of ``text`` (apostrophes and inner dots kept)."""
    return re.findall(r"[\w]+(?:['’.][\w]+)*", text.casefold())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def keywords(answer: str, question: str) -> list[str]:
    """The words of ``answer`` that carry the fact, for checking a greedy answer.

    Names and numbers (written with a capital or a digit) that the question
    does not already contain; without any, the answer's other content words
    that share no stem with the question's (so "maintained" does not count
    when "maintains" was asked); at worst, all its content words.
    """
    asked = set(words(question))
    fresh = [w for w in dict.fromkeys(content_words(answer)) if w not in asked]
    marked = {
        w
        for token in answer.split()
        if token.lstrip("\"'“‘(")[:1].isupper() or any(c.isdigit() for c in token)
        for w in words(token)
    }
    strong = [w for w in fresh if w in marked]
    if strong:
        return strong
    stems = {w[:5] for w in asked if len(w) >= 5}
    plain = [w for w in fresh if w[:5] not in stems]
    return plain or fresh or list(dict.fromkeys(content_words(answer)))


def recalled(text: str, keys: list[str]) -> bool:
    """Whether ``text`` contains every key word (case-insensitive, whole words)."""
    said = set(words(text))
    return bool(keys) and all(key in said for key in keys)


def keyword_share(text: str, keys: list[str]) -> float:
    said = set(words(text))
    return sum(key in said for key in keys) / len(keys) if keys else 0.0


# --- wordings ---------------------------------------------------------------------------


def _indirect(question: str) -> str:
    """'Who maintains X?' → 'who maintains X' (good enough after 'Do you know')."""
    body = question.strip().rstrip("?").strip()
    return body[:1].lower() + body[1:] if body else body


def _fill(template: str, question: str) -> str:
    q = question.strip()
    if not q.endswith("?"):
        q = f"{q}?"
    return template.format(
        q=q,
        lower=q.lower().rstrip("?"),
        first_lower=q[:1].lower() + q[1:],
        indirect=_indirect(q),
    )


def _contracted(question: str) -> str | None:
    lowered = question.lower()
    for long, short in _CONTRACTIONS:
        for a, b in ((long, short), (short, long)):
            if lowered.startswith(a + " "):
                rest = question[len(a) :]
                return b[:1].upper() + b[1:] + rest
    return None


def keeps_meaning(original: str, wording: str) -> bool:
    """The check a rule-made wording must pass: every content word of the question is still there."""
    return set(content_words(original)) <= set(content_words(wording))


def _norm(text: str) -> str:
    return " ".join(words(text))


def wordings(question: str, templates: tuple[str, ...], *, contract: bool = False) -> list[str]:
    """``question`` through each template (and contracted or expanded), those that keep its meaning."""
    made = [_fill(t, question) for t in templates]
    if contract and (short := _contracted(question)):
        made.append(short)
    return [w for w in made if keeps_meaning(question, w)]


def rephrasings(questions: list[str], avoid: set[str]) -> tuple[list[str], list[str]]:
    """Training wordings (the questions themselves first) and held-out wordings, all distinct.

    A held-out wording never equals a training one after normalisation, and
    neither equals a wording in ``avoid`` (another fact's questions).
    """
    train: dict[str, str] = {}
    for question in questions:
        for wording in [question, *wordings(question, _TRAIN_WRAPPERS, contract=True)]:
            key = _norm(wording)
            if key not in train and (key not in avoid or wording == question):
                train[key] = wording
    held: dict[str, str] = {}
    for question in questions:
        for wording in wordings(question, _HELD_OUT_WRAPPERS):
            key = _norm(wording)
            if key not in train and key not in held and key not in avoid:
                held[key] = wording
    return list(train.values()), list(held.values())


def every_wording(question: str) -> list[str]:
    """The question and all its rule-made wordings, trained and held out: what the correction
    memory indexes it by (``bots.app.build_memory``; ``bench/memory_models.py`` measures the same)."""
    train, held_out = rephrasings([question], set())
    return [*train, *held_out]


# --- facts from the feedback export ------------------------------------------------------


def _last_question(conversations: list[dict[str, str]]) -> str | None:
    humans = [t["value"] for t in conversations if t.get("from") in ("human", "user")]
    return humans[-1] if humans else None


def _answer(conversations: list[dict[str, str]]) -> str | None:
    replies = [t["value"] for t in conversations if t.get("from") in ("gpt", "assistant")]
    return replies[-1] if replies else None


def facts_from_export(feedback_dir: Path, skip: set[str] | None = None) -> list[Fact]:
    """Group the approved corrections of an ``iris feedback export`` folder into facts.

    Corrections belong to one fact when they share an answer or a question
    (after normalising case, spaces and punctuation): several people correcting
    one question, or one answer taught under several wordings. Corrections of
    the questions in ``skip`` (held out for evaluation) are left out.
    """
    skipped = {_norm(q) for q in skip or ()}
    rows = jsonl.read(feedback_dir / "sft.jsonl", missing_ok=True)
    meta = jsonl.read(feedback_dir / "sft_meta.jsonl", missing_ok=True)
    if len(meta) != len(rows):
        return []
    pairs: list[tuple[str, str]] = []
    for row, info in zip(rows, meta, strict=True):
        if info.get("kind") != "correction":
            continue
        conversations = row.get("conversations") or []
        question, answer = _last_question(conversations), _answer(conversations)
        if question and answer and _norm(question) not in skipped:
            pairs.append((question.strip(), answer.strip()))
    return group_facts(pairs)


def group_facts(pairs: list[tuple[str, str]]) -> list[Fact]:
    """Facts from (question, approved answer) pairs, most corrected first."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for question, answer in pairs:
        parent[find("q:" + _norm(question))] = find("a:" + _norm(answer))
    groups: dict[str, list[tuple[str, str]]] = {}
    for question, answer in pairs:
        groups.setdefault(find("a:" + _norm(answer)), []).append((question, answer))
    facts = []
    for members in groups.values():
        answer = Counter(a for _, a in members).most_common(1)[0][0]
        questions = [q for q, _ in Counter(q for q, _ in members).most_common()]
        unique = list(dict.fromkeys(questions))
        facts.append(Fact(answer, unique, len(members), keywords(answer, " ".join(unique))))
    facts.sort(key=lambda f: (-f.corrections, f.question))
    everything = {_norm(q) for f in facts for q in f.questions}
    for fact in facts:
        others = everything - {_norm(q) for q in fact.questions}
        fact.train_wordings, fact.held_out = rephrasings(fact.questions, others)
    return facts


def training_rows(facts: list[Fact]) -> list[FineTomeRow]:
    """One FineTome-shaped row per training wording of every fact, and one per anchor (no conversation before).

    Anchors go with the taught rows, so they are repeated as often as the fact is.
    """
    taught = [(wording, fact.answer, "iris-teaching") for fact in facts for wording in fact.train_wordings]
    anchors = [(a["question"], a["answer"], "iris-anchor") for fact in facts for a in fact.anchors]
    return [
        {
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
            "source": source,
            "score": 5.0,
        }
        for question, answer, source in [*taught, *anchors]
    ]


def write_facts(path: Path, facts: list[Fact]) -> None:
    text = json.dumps([asdict(f) for f in facts], indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, text.encode(), private=True)  # corrections: people's words


def read_facts(path: Path) -> list[Fact]:
    if not path.exists():
        return []
    return [Fact(**values) for values in json.loads(path.read_text())]
