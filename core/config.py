"""The chat service's settings: what ``ChatService`` and its parts run by (``IRIS_CHAT_*`` and friends)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from pydantic import Field

from core.limits import RateLimits
from core.ports import Generation

# Empty: keep the system prompt the model was trained with, which its chat
# template inserts. SmolLM2-135M drifts into French under most custom ones.
DEFAULT_SYSTEM_PROMPT = ""

# How long after ✏️ the person's next message is taken as their better answer; later it is a
# question again (a ✏️ forgotten for days must not swallow one).
CORRECTION_WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class ChatConfig:
    """The chat service's own settings (``IRIS_CHAT_*``)."""

    # Empty: the system prompt the model was trained with (from its chat template).
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_turns: int = 40
    max_audio_seconds: float = 300.0  # longer voice notes are refused with the limit stated
    max_file_mb: float = 20.0  # larger files are refused before download (Telegram's bot limit)
    max_text_chars: int = 8000
    # Conversations whose last message is older than this many days are deleted (daily, and by
    # `iris db prune`); consented ones with feedback are kept as training data without identity. 0: keep.
    retention_days: float = 0.0
    # Messages of one person being answered or waiting; past it they are asked to wait.
    max_queued_per_person: Annotated[int, Field(ge=1)] = 3
    queue_notice_seconds: float = 2.0  # a reply that waits longer shows its place in line
    # A person's /forget sweeps every training data folder; another within this many seconds is refused.
    forget_cooldown_seconds: float = 600.0
    # On start, people's turns stored this many minutes before that no process answered are answered
    # (Discord; Telegram's inbox keeps its own updates). 0: none.
    recover_minutes: Annotated[float, Field(ge=0)] = 10.0
    # A model or transcriber that produces nothing for this long is given up on: the person is
    # told and their next message is answered, rather than their turn holding the queue forever.
    stall_seconds: Annotated[float, Field(gt=0)] = 300.0

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


@dataclass(frozen=True)
class ServiceConfig:
    """What the service runs by: the settings groups it reads, each as the settings hold it."""

    chat: ChatConfig = field(default_factory=ChatConfig)
    generation: Generation = field(default_factory=Generation)
    limits: RateLimits = field(default_factory=RateLimits)
    exempt: frozenset[str] = frozenset()  # user ids the rate limits spare (the admins)
    parallel_replies: int = 1  # how many replies the generator writes at once (IRIS_LLM_PARALLEL)
    # Notes given to the transcriber at once; it decodes them as one batch (IRIS_WHISPER_BATCH).
    parallel_transcripts: int = 1
