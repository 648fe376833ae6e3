"""Building the prompt: a system message, as much history as fits, the new message."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.domain import ChatMessage, Role, Turn

# Chat templates wrap every message in a few tokens of markup
# (``<|im_start|>user\n ... <|im_end|>\n`` for SmolLM2); count them so the
# window never overflows the context.
TEMPLATE_OVERHEAD_TOKENS = 8


class PromptTooLong(Exception):
    """The new message alone does not fit in the model's context."""


def build_prompt(
    system_prompt: str,
    history: Sequence[Turn],
    user_text: str,
    count_tokens: Callable[[str], int],
    budget_tokens: int,
) -> list[ChatMessage]:
    """Return the messages for the model, dropping the oldest history first.

    History is taken in whole question/answer pairs so that the model never
    sees an answer without its question.
    """
    head = [ChatMessage("system", system_prompt)] if system_prompt else []
    tail = ChatMessage("user", user_text)
    used = sum(count_tokens(m.content) + TEMPLATE_OVERHEAD_TOKENS for m in [*head, tail])
    if used > budget_tokens:
        raise PromptTooLong(f"{used} tokens do not fit in {budget_tokens}")

    kept: list[ChatMessage] = []
    for pair in reversed(_pairs(history)):
        cost = sum(count_tokens(m.content) + TEMPLATE_OVERHEAD_TOKENS for m in pair)
        if used + cost > budget_tokens:
            break
        kept[:0] = pair
        used += cost
    return [*head, *kept, tail]


def _pairs(history: Sequence[Turn]) -> list[list[ChatMessage]]:
    """Group answered turns into [user, assistant] pairs, skipping unanswered ones."""
    pairs: list[list[ChatMessage]] = []
    pending_user: str | None = None
    for turn in history:
        if turn.role is Role.USER:
            pending_user = turn.text or None
        elif pending_user is not None and turn.text:
            pairs.append([ChatMessage("user", pending_user), ChatMessage("assistant", turn.text)])
            pending_user = None
    return pairs
