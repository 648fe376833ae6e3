"""The interfaces the service needs from the outside world.

Implementations: ``core.transcription.WhisperTranscriber``,
``core.generation.LlamaGenerator`` and ``storage.repository.SqlStore``. Tests
use fakes of these ports where the real part is not what is under test.

All methods here are blocking; the service calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.domain import (
    AuditAction,
    AuditEntry,
    ChatMessage,
    ChatRef,
    Correction,
    CorrectionStatus,
    ErasedCopies,
    ForgetReport,
    ModelVersion,
    Person,
    PruneReport,
    RatingOutcome,
    Speech,
    Stats,
    Timings,
    Turn,
    UserTurnReceipt,
)
from core.experiments import Arm, ArmCounts, ArmRating, Decision, Experiment


class AudioError(Exception):
    """Audio that cannot be used; ``str(error)`` is safe to show to a person."""


class AudioTooLong(AudioError):
    def __init__(self, seconds: float, limit: float) -> None:
        super().__init__(f"{seconds:.0f} s of audio is over the {limit:.0f} s limit")
        self.seconds = seconds
        self.limit = limit


class ServerUnavailable(Exception):
    """A server Iris depends on (models, transcription) is down, refusing or too slow.

    ``str(error)`` names which and how, without addresses or keys: safe to show.
    """


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    audio_seconds: float


class Transcriber(Protocol):
    def probe(self, audio: bytes) -> float:
        """Return the duration in seconds without decoding; raise AudioError."""
        ...

    def transcribe(self, audio: bytes) -> Transcript:
        """Return what was said; raise AudioError for audio that cannot be decoded."""
        ...


@dataclass(frozen=True)
class Generation:
    """Knobs for one reply."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int | None = None


class ReplyGenerator(Protocol):
    @property
    def model_name(self) -> str:
        """Name of the model version currently loaded (recorded on each reply)."""
        ...

    @property
    def context_tokens(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def stream(self, messages: Sequence[ChatMessage], options: Generation) -> Iterator[str]:
        """Yield the reply in pieces; blocking, so run it in a worker thread."""
        ...


class ConversationStore(Protocol):
    def record_user_turn(
        self,
        chat: ChatRef,
        sender: Person,
        *,
        text: str | None,
        from_voice: bool,
        message_id: str | None,
        shared_history: bool,
        resume: bool = False,
    ) -> UserTurnReceipt:
        """Store a person's turn; a message stored before is a duplicate, unless ``resume`` (a
        redelivery after the process handling it stopped) and nothing answered it yet."""
        ...

    def set_transcript(self, turn_id: int, text: str, audio_seconds: float, transcribe_ms: float) -> None: ...

    def mark_failed(self, turn_id: int, reason: str, audio_seconds: float | None = None) -> None:
        """Note on a stored turn why it got no reply."""
        ...

    def history(self, conversation_id: int, before_turn_id: int, limit: int) -> list[Turn]:
        """The latest ``limit`` answered turns before a turn, oldest first."""
        ...

    def record_reply(
        self,
        conversation_id: int,
        reply_to_turn_id: int,
        text: str,
        model_version: str,
        timings: Timings,
        experiment: tuple[int, Arm] | None = None,
    ) -> int:
        """Store a reply; ``experiment``: the A/B test and arm it was written in."""
        ...

    def get_turn(self, turn_id: int) -> Turn | None: ...

    def rate(self, person: Person, turn_id: int, value: int) -> RatingOutcome:
        """Store +1/-1 from a person on a reply; a second press replaces the first."""
        ...

    def add_correction(self, person: Person, turn_id: int, text: str) -> int: ...

    def corrections(self, status: CorrectionStatus | None = None) -> list[Correction]: ...

    def review_correction(
        self, correction_id: int, approve: bool, reviewer: str, text: str | None = None
    ) -> Correction: ...

    def reset(self, chat: ChatRef, sender: Person, shared_history: bool) -> bool:
        """Close the open conversation; return whether there was one."""
        ...

    def forget(self, person: Person) -> ForgetReport: ...

    def set_consent(self, person: Person, consent: bool | None) -> None:
        """Whether the person's feedback may train future models (None: the deployment's default)."""
        ...

    def stats(self) -> Stats: ...

    def prune(self, cutoff: datetime, dry_run: bool = False) -> PruneReport:
        """Delete conversations last active before ``cutoff`` (consented ones with feedback kept anonymous)."""
        ...


class AuditLog(Protocol):
    def record_audit(
        self,
        actor: str,
        action: AuditAction,
        target: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Store one admin action with who did it and when (now)."""
        ...

    def audit_entries(self, since: datetime | None = None) -> list[AuditEntry]:
        """The trail, oldest first; ``since`` is inclusive."""
        ...


class ModelRegistry(Protocol):
    def active_model(self) -> ModelVersion | None: ...

    def register_model(
        self,
        name: str,
        gguf_path: str,
        base_model: str | None = None,
        metrics: dict[str, object] | None = None,
        activate: bool = False,
    ) -> ModelVersion: ...

    def activate_model(self, name: str) -> ModelVersion: ...

    def list_models(self) -> list[ModelVersion]: ...

    def rollback_model(self) -> ModelVersion:
        """Activate the version that was active before the current one."""
        ...


class Experiments(Protocol):
    """A/B tests of model versions (``core.experiments``); one runs at a time across all processes."""

    def running_experiment(self) -> Experiment | None: ...

    def latest_experiment(self) -> Experiment | None:
        """The running experiment, or else the one that ended last."""
        ...

    def start_experiment(
        self, candidate: str, share: float, min_ratings: int, margin: float, started_by: str
    ) -> Experiment:
        """Start serving ``candidate`` to ``share`` of conversations; raise ValueError when it cannot."""
        ...

    def end_experiment(
        self, experiment_id: int, decision: Decision, decided_by: str, report: dict[str, object]
    ) -> Experiment | None:
        """End it with a decision; None when it had ended already (another process decided first)."""
        ...

    def arm_counts(self, experiment_id: int) -> dict[Arm, ArmCounts]: ...

    def arm_ratings(self, experiment_id: int) -> list[ArmRating]: ...


@dataclass(frozen=True)
class InboxItem:
    """A stored platform update, claimed for handling."""

    id: int
    payload: dict[str, object]
    attempts: int  # claims so far, this one included: more than one is a redelivery after a stop


class Inbox(Protocol):
    """Platform updates stored before they are acknowledged, then handed to the bot processes.

    Every process sharing the database claims from it; an item is claimed by one process
    at a time (a lease the holder renews), and of the items with one order key only the
    oldest unfinished one can be claimed, so one person's messages are answered in order
    whichever process received them. An item whose process stopped is claimed again once
    its lease runs out.
    """

    def put(self, platform: str, update_id: str, order_key: str, payload: Mapping[str, object]) -> bool:
        """Store an update; False when it was stored before (a platform's redelivery)."""
        ...

    def claim(self, platform: str, owner: str, lease_s: float, limit: int) -> list[InboxItem]: ...

    def renew(self, owner: str, item_ids: Sequence[int], lease_s: float) -> None:
        """Extend the leases of the items ``owner`` is still handling."""
        ...

    def done(self, item_id: int) -> None:
        """The item was handled: its payload (a person's words) is dropped, its id kept against redelivery."""
        ...


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain run reported; ``summary`` is ready to post in a chat."""

    ok: bool
    promoted: bool
    model: str | None
    summary: str


class CopyEraser(Protocol):
    def erase(self, person: Person | None, texts: Sequence[str]) -> ErasedCopies:
        """Take texts out of every copy outside the database (exports, datasets, runs).

        ``person``: whose they are (/forget), or None (retention: many people's).
        """
        ...


class Retrainer(Protocol):
    def retrain(self, profile: str | None = None) -> RetrainOutcome:
        """Run a whole retrain in a separate process and wait for it (blocking)."""
        ...


class SynthesisFailed(Exception):
    """Speech could not be made; ``str(error)`` is short and safe to log (no text of the reply)."""


class Synthesizer(Protocol):
    """Text to speech (``core.speech``): blocking, so the service runs it in a worker thread."""

    @property
    def name(self) -> str: ...

    @property
    def words_per_second(self) -> float:
        """About how fast it speaks, to choose whole sentences that fit a time limit."""
        ...

    def speak(self, text: str, max_seconds: float) -> Speech:
        """Say ``text`` as OGG/Opus, cut at ``max_seconds``; raise SynthesisFailed."""
        ...


class VoicePreferences(Protocol):
    """Who wants spoken replies, and what was spoken (``storage.repository.SqlStore``)."""

    def voice_preference(self, person: Person) -> bool | None:
        """The person's ``/voice on|off``; None: they never said (the deployment's mode decides)."""
        ...

    def set_voice_preference(self, person: Person, on: bool | None) -> None: ...

    def record_speech(self, turn_id: int, seconds: float, speak_ms: float, audio: bytes | None) -> None:
        """Note a reply's spoken length and synthesis time (and keep its audio, when given)."""
        ...
