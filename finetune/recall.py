"""What a model knows by itself, and where its taught answers bleed: the gate's per-fact figures.

``finetune.scoring`` asks the candidate GGUF alone (never the chat service, so
never the correction memory) each fact's question, held-out wordings, reverse
question and neighbours; these helpers turn that into plain JSON for the
model version's metrics, the bleed rule, and ``known_questions``, which the
bots call after a promotion to stop serving from memory what the model knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finetune.config import GateConfig
from finetune.scoring import FactScore, ModelScores

NEXT_BLEED = (
    "The new model gives taught answers to questions they do not answer ({examples}). Approve corrections "
    "for such questions with their right answers, or retrain more gently (a lower IRIS_RETRAIN_TEACH_WEIGHT "
    "or IRIS_RETRAIN_LEARNING_RATE), then run `iris retrain` again; IRIS_GATE_MAX_BLEED sets the share allowed."
)


def fact_entry(fact: FactScore) -> dict[str, Any]:
    """One taught fact as the candidate alone answers it (plain JSON, in ``metrics()["facts"]``)."""
    return {
        "question": fact.question,
        "questions": list(fact.questions or (fact.question,)),
        "answer": fact.expected,
        "keys": list(fact.keys),
        "reply": fact.answer,
        "recalled": fact.recalled,
        "wordings": fact.held_out,
        "wordings_recalled": fact.held_out_recalled,
        "reverse": fact.reverse,
        "reverse_reply": fact.reverse_answer if fact.reverse else None,
        "reverse_recalled": fact.reverse_recalled,
        "neighbours": len(fact.neighbours),
        "bleeding": [{"question": q, "reply": r} for q, r in fact.bleeding],
        "known": fact.known,
    }


def bleed(scores: ModelScores) -> dict[str, Any]:
    """How many neighbour questions got a taught fact's key words, of how many asked."""
    asked = sum(len(fact.neighbours) for fact in scores.taught)
    bled = sum(len(fact.bleeding) for fact in scores.taught)
    return {"asked": asked, "bleeding": bled, "share": round(bled / asked, 5) if asked else None}


def known_questions(metrics: Mapping[str, Any]) -> set[str]:
    """The questions (every wording people asked) of the facts a model knows by itself.

    ``metrics``: a model version's stored metrics (the gate's figures under
    "gate") or ``Verdict.metrics()`` itself. A fact is known when the model
    alone recalled it on its question and on at least 2 of 3 held-out wordings.
    """
    nested = metrics.get("gate")
    gate: Mapping[str, Any] = nested if isinstance(nested, Mapping) else metrics
    known: set[str] = set()
    for fact in gate.get("facts") or ():
        if isinstance(fact, Mapping) and fact.get("known") is True:
            known.update(fact.get("questions") or [fact["question"]])
    return known


def bleed_rule(
    candidate: ModelScores, active: ModelScores, config: GateConfig
) -> tuple[bool, list[str], list[str]]:
    """Refuse when the candidate's bleed share exceeds ``max_bleed`` and the active model's."""
    reasons: list[str] = []
    backs = [f for f in candidate.taught if f.reverse is not None]
    if backs:
        shown = "; ".join(f"{f.reverse!r} → {f.reverse_answer!r}" for f in backs[:3])
        reasons.append(
            f"reverse questions (reported, not judged): {sum(bool(f.reverse_recalled) for f in backs)}/"
            f"{len(backs)} named the fact's subject: {shown}"
        )
    mine, theirs = bleed(candidate), bleed(active)
    if not mine["asked"]:
        if candidate.taught:
            reasons.append("no neighbour question could be made from the taught questions: bleed not checked")
        return False, reasons, []
    share, before = mine["share"], theirs["share"] or 0.0
    bled = share > config.max_bleed + 1e-9 and share > before
    shown = "; ".join(f"{q!r} → {r!r}" for f in candidate.taught for q, r in f.bleeding[:2])
    reasons.append(
        f"neighbour questions given a taught answer: {mine['bleeding']}/{mine['asked']} ({share:.0%}; active "
        f"model {before:.0%}; {'beyond' if bled else 'within'} the {config.max_bleed:.0%} allowed)"
        + (f": {shown}" if shown else "")
    )
    examples = ", ".join(repr(q) for f in candidate.taught for q, _ in f.bleeding[:1])
    return bled, reasons, [NEXT_BLEED.format(examples=examples)] if bled else []
