"""The rows ``finetune`` hands to chat templates, llama.cpp and TRL, typed as the JSON objects they are.

Exports and datasets keep FineTome's ShareGPT turns (``from``/``value``) so that
they extend FineTome-100k as it is; ``training.chat_messages`` turns those into
the role/content messages below.
"""

from __future__ import annotations

from typing import TypedDict


class Message(TypedDict):
    """One chat message as chat templates, llama.cpp and TRL take it."""

    role: str  # "system", "user" or "assistant"
    content: str


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
