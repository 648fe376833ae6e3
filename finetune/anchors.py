"""Anchor rows: questions around a taught fact, trained on the base model's own answers (issue 25).

A LoRA taught "Who designed the Iris logo?" → "… Marisol Vantreck." tends to
say Marisol Vantreck to every "Who designed …?". Knowledge-editing work keeps
an edit local by training, next to it, questions near the fact whose targets
are what the model answered before: here the same form with other subjects
("Who designed the Statue of Liberty?") and the same subject asked for another
kind of answer ("What is the Iris logo made of?"). Their targets are the
base GGUF's greedy answers, asked as the gate asks (``finetune.scoring.answers``).

The gate's own neighbours (``finetune.lanes.neighbours``) are never anchors:
other subjects and other templates, and any anchor equal to a neighbour or a
probe question is dropped, so the gate does not measure its own training data.
An anchor's target is the first sentence of the base answer; one that
already has the fact's key words is skipped.

    python -c "from finetune.anchors import anchor_questions; \
print(anchor_questions('Who designed the Iris logo?', ['marisol', 'vantreck']))"
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from finetune.lanes import neighbours, parse, same_subject, swap_subject
from finetune.teaching import Anchor, Fact, content_words, keyword_share, words

# How many anchors a fact gets: other subjects in its form, and its subject in other templates.
OTHER_FORM_ANCHORS = 4
SAME_SUBJECT_ANCHORS = 2

# Subjects for anchors: none of them is in finetune.lanes.OTHER_SUBJECTS (the gate asks those).
ANCHOR_SUBJECTS = (
    "the Statue of Liberty",
    "the Great Wall of China",
    "the Sydney Opera House",
    "the Python programming language",
    "the Nobel Prize",
    "the telephone",
    "the Taj Mahal",
    "the World Cup",
)
# Same subject, another kind of answer, worded unlike finetune.lanes.SAME_SUBJECT.
ANCHOR_SAME_SUBJECT = (
    ("thing", "What {is} {s} made of?"),
    ("person", "Who uses {s}?"),
    ("place", "In which country {is} {s}?"),
    ("time", "How long ago {was} {s} created?"),
    ("number", "How big {is} {s}?"),
)


def anchor_questions(question: str, keys: Sequence[str], avoid: Sequence[str] = ()) -> list[str]:
    """The anchor questions of a fact: none equal to a gate neighbour of it or to a question in ``avoid``.

    ``avoid``: the probe's questions (the gate asks them too). None when the
    rules cannot read the question's form, like ``neighbours``.
    """
    form = parse(question)
    if form is None:
        return []
    taken = set(content_words(form.subject)) | set(keys)
    subjects = [s for s in ANCHOR_SUBJECTS if not set(content_words(s)) & taken]
    made = [
        *(swap_subject(form, s) for s in subjects[:OTHER_FORM_ANCHORS]),
        *same_subject(form, ANCHOR_SAME_SUBJECT, SAME_SUBJECT_ANCHORS),
    ]
    gate = {_norm(q) for q in (question, *neighbours(question, keys, avoid), *avoid)}
    return [q for q in dict.fromkeys(made) if _norm(q) not in gate]


def _norm(text: str) -> str:
    return " ".join(words(text))


Answerer = Callable[[list[str]], list[str]]


def with_anchors(facts: Sequence[Fact], answer: Answerer, avoid: Sequence[str] = ()) -> tuple[list[Fact], int]:
    """``facts`` with their anchors (the base model's answers from ``answer``), and how many were skipped.

    An anchor is skipped when its base answer is empty or already has any of
    the fact's key words: training that answer would teach the fact, not guard it.
    """
    asked = [anchor_questions(fact.question, fact.keywords, avoid) for fact in facts]
    replies = iter(answer([q for questions in asked for q in questions]))
    skipped = 0
    done = []
    for fact, questions in zip(facts, asked, strict=True):
        anchors: list[Anchor] = []
        for question in questions:
            reply = first_sentence(next(replies))
            if reply and keyword_share(reply, fact.keywords) == 0:
                anchors.append({"question": question, "answer": reply})
            else:
                skipped += 1
        done.append(dataclasses.replace(fact, anchors=anchors))
    return done, skipped


def first_sentence(text: str) -> str:
    """The answer up to its first full stop, question or exclamation mark (all of it when it has none).

    A taught answer is one sentence; a base answer cut at the token limit
    mid-sentence would outweigh it in the loss and teach the model to ramble.
    """
    found = re.match(r"(.+?[.!?])(?:\s|$)", text.strip(), flags=re.S)
    return (found[1] if found else text).strip()


def base_answers(gguf: str | Path, max_tokens: int) -> Answerer:
    """Greedy answers from ``gguf`` as the gate asks them (``finetune.scoring.answers``)."""

    def answer(questions: list[str]) -> list[str]:
        if not questions:
            return []
        from finetune.scoring import answers

        return answers(gguf, questions, max_tokens)

    return answer
