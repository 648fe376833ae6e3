"""The rows ``finetune`` hands to chat templates, llama.cpp and TRL, typed as the JSON objects they are.

Exports and datasets keep FineTome's ShareGPT turns (``from``/``value``) so that
they extend FineTome-100k as it is; ``chat_messages`` turns those into
the role/content messages below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class Message(TypedDict):
    """One chat message as chat templates, llama.cpp and TRL take it."""

    role: str  # "system", "user" or "assistant"
    content: str


# FineTome-100k's ShareGPT turn; "from" is a keyword, hence the functional form.
ShareGptTurn = TypedDict("ShareGptTurn", {"from": str, "value": str})  # from: "system", "human" or "gpt"


class FineTomeRow(TypedDict):
    """A FineTome-100k row as datasets and exports keep it (``sft.jsonl``, ``train.jsonl``, the evals)."""

    conversations: list[ShareGptTurn]
    source: str
    score: float


class RowOwners(TypedDict):
    """Whose words an exported or built row holds, beside it in ``*_meta.jsonl``: how /forget finds it."""

    people: list[str]  # pseudonyms (finetune.feedback.Pseudonyms) of everyone whose words or votes it holds
    turns: list[int]  # the database ids of its turns (context, question, reply)
    conversation: int


class SftMeta(RowOwners):
    """Beside each exported SFT row (``sft_meta.jsonl``): whose words it holds and where it came from."""

    person: str  # the pseudonym (finetune.feedback.Pseudonyms) of whose row it is, for the per-person cap
    kind: str  # "correction" or "rating"
    reply_id: int
    model_version: str
    persona: str | None  # the persona whose prompt wrote the reply (core.personas); None: the configured prompt
    language: str | None  # the language of the person's turn it answers (core.languages); None: not detected


class PromptCompletion(TypedDict):
    """TRL's conversational prompt-completion row: the loss falls on the completion only."""

    prompt: list[Message]
    completion: list[Message]


class KtoExample(TypedDict):
    """TRL's KTO row: one reply and whether people liked it."""

    prompt: list[Message]
    completion: list[Message]
    label: bool


class DpoExample(TypedDict):
    """TRL's DPO row: the corrected answer is chosen over the bot's."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]


def chat_messages(row: Mapping[str, Any]) -> list[Message]:
    """A FineTome row's ``conversations`` as role/content messages."""
    messages: list[Message] = []
    for turn in row.get("conversations") or []:
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        content = turn.get("value", turn.get("content"))
        if role and isinstance(content, str):
            messages.append({"role": role, "content": content})
    return messages


def prompt_and_answer(row: Mapping[str, Any]) -> tuple[list[Message], str] | None:
    """The context up to the last reply, and that reply; None for a row without one."""
    messages = chat_messages(row)
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    if not messages or not any(m["role"] == "user" for m in messages[:-1]):
        return None
    return messages[:-1], messages[-1]["content"]


def to_prompt_completion(row: Mapping[str, Any]) -> PromptCompletion | None:
    """A FineTome row as TRL's conversational prompt-completion row (loss on the completion only)."""
    pair = prompt_and_answer(row)
    if pair is None:
        return None
    prompt, answer = pair
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}


def as_messages(value: str | Sequence[Mapping[str, Any]], role: str) -> list[Message]:
    """An export's prompt or reply (a string, or messages) as role/content messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": ROLES.get(m.get("role", role), role), "content": m["content"]} for m in value]


def last_user_text(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """The last user message of a prompt, case-folded with its spaces collapsed (to match questions)."""
    messages = as_messages(prompt, "user")
    users = [m["content"] for m in messages if m["role"] == "user"]
    return " ".join(users[-1].casefold().split()) if users else ""
