"""Quality filters for chat examples: what a fine-tune should not learn from.

Each rule names a reason that the dataset build counts in its report. The
examples are FineTome-shaped ``conversations`` (``[{from, value}]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from finetune.rows import ShareGptTurn

REASONS = ("empty", "too_short", "too_long", "refusal", "non_language")

# Stock phrases of a model declining or hedging about itself; lower-case, straight quotes.
REFUSALS = re.compile(
    r"\b(?:as an ai(?: language)? model"
    r"|i(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:can(?:'t|not)|am unable|won't)"
    r"|i (?:can(?:'t|not)|am unable to|won't) (?:help|assist|comply|provide|do that|answer that)"
    r"|i(?:'m| am) not able to (?:help|assist|provide)"
    r"|i do not have (?:personal )?(?:opinions|feelings|the ability))",
)
# Letters only: runs of "-" or "=" are Markdown rules and tables.
RUN_OF_ONE_LETTER = re.compile(r"([^\W\d_])\1{19,}")


@dataclass(frozen=True)
class QualityRules:
    min_chars: int = 2
    max_chars: int = 8000
    drop_refusals: bool = True
    drop_non_language: bool = True


def problem(conversations: Sequence[ShareGptTurn], rules: QualityRules) -> str | None:
    """The first reason (one of ``REASONS``) to drop this example, or None to keep it."""
    values = [str(turn.get("value") or "") for turn in conversations]
    replies = [v for turn, v in zip(conversations, values, strict=True) if turn.get("from") == "gpt"]
    asked = [v for turn, v in zip(conversations, values, strict=True) if turn.get("from") == "human"]
    if not replies or not asked or any(not v.strip() for v in values):
        return "empty"
    if any(len(reply.strip()) < rules.min_chars for reply in replies):
        return "too_short"
    if sum(len(v) for v in values) > rules.max_chars:
        return "too_long"
    if rules.drop_refusals and any(is_refusal(reply) for reply in replies):
        return "refusal"
    if rules.drop_non_language and any(is_non_language(reply) for reply in replies):
        return "non_language"
    return None


def is_refusal(text: str) -> bool:
    return REFUSALS.search(text.casefold().replace("’", "'")) is not None


def is_non_language(text: str) -> bool:
    """Symbol soup, a long run of one letter, or a model stuck repeating itself.

    A short numeric answer ("391") is language enough: only text of 10+ visible
    characters with under half letters or digits counts as soup.
    """
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) >= 10 and sum(ch.isalnum() for ch in visible) < len(visible) / 2:
        return True
    if RUN_OF_ONE_LETTER.search(text):
        return True
    words = text.casefold().split()
    return len(words) >= 12 and len(set(words)) / len(words) < 0.25
