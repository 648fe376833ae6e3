"""The forgetting probe: general-knowledge questions with checkable answers, asked with llama.cpp.

``finetune/data/probe.jsonl`` ships with Iris: real questions (geography,
arithmetic, science, language), each with the answers that count as right.
The gate asks candidate and active model every question the same way (greedy,
a new conversation each) and pairs their outcomes question by question:
McNemar's exact test says whether the candidate is worse beyond chance
(``pair``), so a few answers that flip both ways from run to run are not a loss.

    python -c "from finetune.probe import score_probe; print(score_probe('model.gguf').summary())"
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class Paired:
    """The probe's paired outcomes (same questions, both models) and McNemar's exact test on them.

    ``lost``: right before, wrong now (b); ``gained``: the reverse (c). ``p`` is the
    one-sided exact p-value that the candidate is worse (b ~ Binomial(b + c, ½) when
    it is not). ``low``/``high``: a 95 % interval on the candidate's accuracy minus
    the active model's, Newcombe's paired square-and-add interval, which, unlike
    Wald's, stays inside [-1, 1] and is not zero-width when b = c = 0.
    """

    questions: int
    both_right: int
    lost: int
    gained: int
    both_wrong: int
    p: float
    low: float
    high: float
    per_question: bool = True  # False: only the counts were known (see ``pair``)

    @property
    def difference(self) -> float:
        return (self.gained - self.lost) / self.questions if self.questions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "lost": self.lost,
            "gained": self.gained,
            "p": round(self.p, 5),
            "difference": round(self.difference, 5),
            "interval": [round(self.low, 5), round(self.high, 5)],
            "per_question": self.per_question,
        }


def pair(active: ProbeScore, candidate: ProbeScore) -> Paired:
    """Pair two models' probe outcomes question by question and test whether the candidate is worse.

    Scores without their answers (made by hand) are paired by their counts as if
    no question changed both ways — the smallest discordance they allow.
    """
    from scipy.stats import binomtest

    mine, theirs = _outcomes(candidate), _outcomes(active)
    if mine is not None and theirs is not None and (shared := [q for q in theirs if q in mine]):
        table = [sum(theirs[q] == a and mine[q] == c for q in shared) for a, c in _CELLS]
        per_question = True
    else:
        both = min(active.right, candidate.right)
        lost, gained = max(0, active.right - candidate.right), max(0, candidate.right - active.right)
        table = [both, lost, gained, active.total - both - lost - gained]
        per_question = False
    both_right, lost, gained, both_wrong = table
    p = binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue if lost + gained else 1.0
    low, high = newcombe_paired(*table)
    return Paired(sum(table), both_right, lost, gained, both_wrong, float(p), low, high, per_question)


_CELLS = ((True, True), (True, False), (False, True), (False, False))  # (active right, candidate right)


def _outcomes(score: ProbeScore) -> dict[str, bool] | None:
    missed = set(score.missed)
    return {q: q not in missed for q in score.answers} if score.answers else None


def newcombe_paired(a: int, b: int, c: int, d: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % interval on p₂ - p₁ for a paired 2×2 table (a both right, b only first, c only second, d neither).

    Newcombe's square-and-add interval (Statistics in Medicine 17, 1998, 2635-2650):
    Wilson intervals for each proportion, combined with the corrected correlation
    of the pairs, as Fagerland, Lydersen and Laake recommend for paired tables
    (*Statistical Analysis of Contingency Tables*, ch. 8).
    """
    n = a + b + c + d
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson(a + b, n, z)
    l2, u2 = _wilson(a + c, n, z)
    product = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    # The correlation of the pairs, corrected as Newcombe does (0 for a small positive one).
    phi = (
        0.0
        if not product or 0 <= cross <= n / 2
        else (cross - n / 2 if cross > 0 else cross) / math.sqrt(product)
    )
    theta = p2 - p1
    delta = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    epsilon = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, theta - delta), min(1.0, theta + epsilon)


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return centre - half, centre + half
