"""Fakes of core's own ports, for what the real part cannot show on demand."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Sequence

from core.domain import ChatMessage
from core.ports import Generation, RetrainOutcome


class HeldRetrainer:
    """A ``core.ports.Retrainer`` whose run lasts until the test releases it, then promotes."""

    SUMMARY = "Promoted iris-ft-1: held-out loss 2.10 → 1.95."

    def __init__(self) -> None:
        self.release = threading.Event()
        self.profiles: list[str | None] = []

    @property
    def runs(self) -> int:
        return len(self.profiles)

    def retrain(self, profile: str | None = None) -> RetrainOutcome:
        self.profiles.append(profile)
        if not self.release.wait(timeout=30):
            raise TimeoutError("the test never released the retrain")
        return RetrainOutcome(True, True, "iris-ft-1", self.SUMMARY)


class ScriptedGenerator:
    """A ``ReplyGenerator`` that streams a fixed reply in pieces, pausing between them.

    For scenarios about rendering (splitting, pacing) where what the model says
    must be known in advance.
    """

    model_name = "scripted"
    context_tokens = 4096

    def __init__(self, reply: str, pieces: int = 8, pause_s: float = 0.0) -> None:
        self.reply = reply
        self.pieces = pieces
        self.pause_s = pause_s

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        size = -(-len(self.reply) // self.pieces)
        for start in range(0, len(self.reply), size):
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
            yield self.reply[start : start + size]


class RecordingGenerator(ScriptedGenerator):
    """A ``ScriptedGenerator`` that keeps every prompt it was given: what reached the model, turn by turn."""

    def __init__(self, reply: str, pieces: int = 2, pause_s: float = 0.0) -> None:
        super().__init__(reply, pieces, pause_s)
        self.prompts: list[list[ChatMessage]] = []

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        self.prompts.append(list(messages))
        async for piece in super().stream(messages, options):
            yield piece
