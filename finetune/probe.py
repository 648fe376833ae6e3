"""The forgetting probe: general-knowledge questions with checkable answers, asked with llama.cpp.

``finetune/data/probe.jsonl`` ships with Iris: real questions (geography,
arithmetic, science, language), each with the answers that count as right.
The gate asks candidate and active model every question the same way (greedy,
a new conversation each) and compares how many each gets right.

    python -c "from finetune.probe import score_probe; print(score_probe('model.gguf').summary())"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune import jsonl
from finetune.data import PROBE
from finetune.teaching import words


@dataclass(frozen=True)
class ProbeQuestion:
    question: str
    answers: tuple[str, ...]  # any of them, as whole words, case-insensitive
    topic: str = ""


@dataclass
class ProbeScore:
    """How many probe questions a model answered right, and what it said."""

    right: int
    total: int
    answers: dict[str, str] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.right / self.total if self.total else 0.0

    def summary(self) -> str:
        return f"{self.right}/{self.total} right ({self.share:.0%})"

    def to_dict(self) -> dict[str, Any]:
        return {"right": self.right, "total": self.total, "missed": self.missed}


def load_probe(path: Path = PROBE) -> list[ProbeQuestion]:
    rows = jsonl.read(path)
    return [ProbeQuestion(row["question"], tuple(row["answers"]), row.get("topic", "")) for row in rows]


def is_right(text: str, answers: Sequence[str]) -> bool:
    """Whether ``text`` contains one of ``answers`` as whole words (case-insensitive)."""
    said = words(text)
    for answer in answers:
        wanted = words(answer)
        if wanted and any(said[i : i + len(wanted)] == wanted for i in range(len(said) - len(wanted) + 1)):
            return True
    return False


def grade(questions: Sequence[ProbeQuestion], replies: Sequence[str]) -> ProbeScore:
    """Score replies given in the order of ``questions``."""
    score = ProbeScore(0, len(questions))
    for question, reply in zip(questions, replies, strict=True):
        score.answers[question.question] = reply
        if is_right(reply, question.answers):
            score.right += 1
        else:
            score.missed.append(question.question)
    return score


def score_probe(
    gguf: str | Path, questions: Sequence[ProbeQuestion] | None = None, max_tokens: int = 40
) -> ProbeScore:
    """Ask ``gguf`` every probe question (greedy, each in a new conversation) and grade the answers."""
    from finetune.scoring import answers

    questions = list(questions) if questions is not None else load_probe()
    return grade(questions, answers(gguf, [q.question for q in questions], max_tokens))
