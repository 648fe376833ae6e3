from datetime import UTC, datetime

import pytest

from core.domain import Role, Turn
from core.prompt import TEMPLATE_OVERHEAD_TOKENS, PromptTooLong, build_prompt


def turn(i: int, role: Role, text: str | None) -> Turn:
    return Turn(id=i, conversation_id=1, role=role, text=text, created_at=datetime.now(UTC))


def words(text: str) -> int:
    return len(text.split())


HISTORY = [
    turn(1, Role.USER, "one two three"),
    turn(2, Role.ASSISTANT, "four five six"),
    turn(3, Role.USER, "seven eight"),
    turn(4, Role.ASSISTANT, "nine ten"),
]


def test_everything_fits() -> None:
    messages = build_prompt("be nice", HISTORY, "new question", words, 1000)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "be nice"),
        ("user", "one two three"),
        ("assistant", "four five six"),
        ("user", "seven eight"),
        ("assistant", "nine ten"),
        ("user", "new question"),
    ]


def test_oldest_pairs_drop_first_when_over_budget() -> None:
    fixed = (2 + 2) + 2 * TEMPLATE_OVERHEAD_TOKENS  # system + new message
    latest_pair = (2 + 2) + 2 * TEMPLATE_OVERHEAD_TOKENS
    messages = build_prompt("be nice", HISTORY, "new question", words, fixed + latest_pair)
    assert [m.content for m in messages] == ["be nice", "seven eight", "nine ten", "new question"]


def test_unanswered_turns_are_left_out_and_an_empty_system_prompt_is_the_models_own() -> None:
    history = [turn(1, Role.USER, "lost question"), *HISTORY]
    messages = build_prompt("", history, "q", words, 1000)
    assert messages[0].role == "user" and "lost question" not in [m.content for m in messages]


def test_a_message_that_cannot_fit_is_an_error() -> None:
    with pytest.raises(PromptTooLong):
        build_prompt("", [], "word " * 100, words, 50)
