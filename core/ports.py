"""The interfaces the service needs from the outside world.

Implementations: ``core.transcription.WhisperTranscriber``,
``core.generation.LlamaGenerator`` and ``storage.repository.SqlStore``. Tests
use fakes of these ports where the real part is not what is under test.

All methods here are blocking (the service calls them from worker threads), except
``ReplyGenerator.stream``, which hands the reply's pieces to the event loop as the
model writes them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

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
from core.personas import Persona

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from core.chat_settings import ChatSettings, Setting


class AudioError(Exception):
    """Audio that cannot be used; ``str(error)`` is safe to show to a person."""


class AudioTooLong(AudioError):
    """Audio over the length limit; ``seconds`` is how much of it is known to be there (at least)."""

    def __init__(self, seconds: float, limit: float) -> None:
        super().__init__(f"at least {seconds:.0f} s of audio, over the {limit:.0f} s limit")
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
    language_probability: float | None = None  # how sure the transcriber was of ``language``, 0-1


@dataclass(frozen=True)
class DecodedAudio:
    """Audio decoded to 16 kHz mono float32 samples, never longer than the limit it was decoded to.

    ``samples`` is a NumPy array (``Any`` so that ``core`` imports without NumPy's types).
    """

    samples: Any
    seconds: float  # the length really decoded, whatever the file's header claimed


class Transcriber(Protocol):
    def decode(self, audio: bytes, max_seconds: float) -> DecodedAudio:
        """Decode at most ``max_seconds`` (plus a small margin), whatever the file's header claims.

        Raise ``AudioTooLong`` for more, ``AudioError`` for what is not audio.
        """
        ...

    def transcribe(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        """Return what was said in audio ``decode`` returned; ``""`` when no speech was heard.

        ``language``: an ISO 639-1 code to hear it in (a person's /language); None: the configured one.
        """
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

    def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        """The reply in pieces, as the model writes them, without blocking the event loop.

        An async generator: whoever stops listening closes it (``contextlib.aclosing``),
        and the model stops writing that reply at its next piece.
        """
        ...


@dataclass(frozen=True)
class UnansweredTurn:
    """A person's turn stored with its platform message id that has no reply and no failure reason."""

    turn_id: int
    conversation_id: int
    chat: ChatRef
    message_id: str
    from_voice: bool
    created_at: datetime


class AlreadyReviewed(LookupError):
    """A correction decided already, by another admin or a moment ago: the first decision stands."""


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
        memory: tuple[int, str] | None = None,
        persona: tuple[str, int] | None = None,
    ) -> int:
        """Store a reply; ``experiment``: the A/B test and arm it was written in; ``memory``: the
        approved correction that served it and how (``core.memory``); ``persona``: the name and
        prompt version of the persona that wrote it (``core.personas``; None: the configured prompt)."""
        ...

    def get_turn(self, turn_id: int) -> Turn | None: ...

    def unanswered_turns(self, platform: str, since: datetime, until: datetime) -> list[UnansweredTurn]:
        """Turns of ``platform`` stored in [``since``, ``until``) with neither reply nor error, oldest first."""
        ...

    def claim_unanswered(self, turn_id: int, reason: str) -> bool:
        """Mark an unanswered turn failed with ``reason``, only if it is still unanswered and not failed.

        One conditional UPDATE: of several processes claiming one turn at once, exactly one gets True.
        A reply stored later clears the reason (``record_reply``): the claimer answered it after all.
        """
        ...

    def rate(self, person: Person, turn_id: int, value: int) -> RatingOutcome:
        """Store +1/-1 from a person on a reply; a second press replaces the first."""
        ...

    def add_correction(self, person: Person, turn_id: int, text: str) -> int: ...

    def corrections(self, status: CorrectionStatus | None = None) -> list[Correction]: ...

    def correction(self, correction_id: int) -> Correction | None: ...

    def review_correction(
        self,
        correction_id: int,
        approve: bool,
        reviewer: str,
        text: str | None = None,
        pending_only: bool = False,
    ) -> Correction:
        """Decide a correction (``LookupError`` when there is none). With ``pending_only``, only one
        still pending, in one step: of two decisions at once the second raises ``AlreadyReviewed``."""
        ...

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


@dataclass(frozen=True)
class LimitEvent:
    """One thing a person did that a limit counts: when (seconds since the epoch) and how much."""

    at: float
    amount: float = 1.0


Verdict = TypeVar("Verdict")


class LimitLedger(Protocol):
    """What each person did lately, as every process on one database sees it (``core.limits``).

    ``kind`` names what is counted ("message", "voice", "press", "correction").
    """

    def recent(self, person: Person, kind: str, since: float) -> list[LimitEvent]:
        """The person's events of ``kind`` after ``since``, oldest first."""
        ...

    def note(self, person: Person, kind: str, event: LimitEvent, since: float) -> None:
        """Count ``event``; the person's events of ``kind`` at or before ``since`` may be dropped."""
        ...

    def take(
        self,
        person: Person,
        kind: str,
        event: LimitEvent,
        since: float,
        judge: Callable[[list[LimitEvent]], Verdict | None],
    ) -> Verdict | None:
        """``judge`` the person's events of ``kind`` after ``since``; count ``event`` if it returns None.

        One step for every process on the database: no event of the person's ``kind`` is
        counted between the judging and the counting. Returns what ``judge`` returned.
        """
        ...

    def unanswered(self, person: Person, within_s: float) -> int:
        """How many of the person's messages of the last ``within_s`` seconds (wall clock) are
        stored with neither a reply nor a reason they got none: those still being answered."""
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

    def previous_model(self) -> ModelVersion | None:
        """The version ``rollback_model`` would activate, if any."""
        ...

    def report_model_load(self, name: str, error: str | None) -> None:
        """Record that a version's file failed to load or answer (``error``, one line), or loads (None).

        Kept in the registry so every process and ``iris models list`` see a broken version.
        """
        ...


class Experiments(Protocol):
    """A/B tests of model versions or of personas (``core.experiments``); one at a time in all processes."""

    def running_experiment(self) -> Experiment | None: ...

    def latest_experiment(self) -> Experiment | None:
        """The running experiment, or else the one that ended last."""
        ...

    def start_experiment(
        self, candidate: str, share: float, min_ratings: int, margin: float, started_by: str
    ) -> Experiment:
        """Start serving ``candidate`` to ``share`` of conversations; raise ValueError when it cannot."""
        ...

    def start_persona_experiment(
        self, control: str, candidate: str, share: float, min_ratings: int, margin: float, started_by: str
    ) -> Experiment:
        """Answer ``share`` of conversations with persona ``candidate`` and the rest with persona
        ``control``, on the active version; raise ValueError when it cannot (one runs, of either kind)."""
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
    # What an earlier attempt showed: the platform's message ids by kind ("transcript", "reply").
    shown: Mapping[str, list[int]] = field(default_factory=dict)


class Inbox(Protocol):
    """Platform updates stored before they are acknowledged, then handed to the bot processes.

    Every process sharing the database claims from it; an item is claimed by one process
    at a time (a lease the holder renews), and of the items with one order key only the
    oldest unfinished one can be claimed, so one person's messages are answered in order
    whichever process received them. An item whose process stopped is claimed again once
    its lease runs out.

    Every claim counts an attempt, in the database, so the count holds across processes
    and restarts. An item whose handling crashed or hung its process on each of the
    inbox's allowed attempts is never claimed again: ``set_aside`` marks it failed, so
    that one poisonous message cannot take down every process in turn, forever.
    """

    def put(
        self, platform: str, update_id: str, order_key: str, payload: Mapping[str, object], urgent: bool = False
    ) -> bool:
        """Store an update; False when it was stored before (a platform's redelivery).

        An ``urgent`` update (a button press, a command: quick, never for the model) is
        claimed apart from the others, so that it never waits behind them.
        """
        ...

    def claim(
        self, platform: str, owner: str, lease_s: float, limit: int, urgent: bool = False
    ) -> list[InboxItem]:
        """Take up to ``limit`` waiting items for ``lease_s`` seconds; each claim counts an attempt.

        Only urgent items when ``urgent``, only the others otherwise: each kind has its own bound.
        """
        ...

    def set_aside(self, platform: str) -> list[InboxItem]:
        """Mark failed the items whose last allowed attempt ran out of its lease, and return them.

        Each is returned once, to one caller, with its payload (so that its sender can be
        told); the stored payload is dropped, and later items with its order key go on.
        """
        ...

    def renew(self, owner: str, item_ids: Sequence[int], lease_s: float) -> None:
        """Extend the leases of the items ``owner`` is still handling."""
        ...

    def done(self, item_id: int) -> None:
        """The item was handled: its payload (a person's words) is dropped, its id kept against redelivery."""
        ...

    def note_shown(self, owner: str, item_id: int, shown: Mapping[str, list[int]]) -> None:
        """The messages shown for an item ``owner`` handles, for whoever takes it over after a stop
        (a late write of an owner whose claim was taken over changes nothing)."""
        ...


class PendingCorrections(Protocol):
    """Who pressed ✏️ under a reply and owes a better answer: one per person and chat.

    In the database, so that the answer lands whichever process receives it, after a restart too.
    """

    def expect(self, chat: ChatRef, person: Person, turn_id: int, stale: datetime) -> None:
        """Take the person's next message in ``chat`` as their answer to ``turn_id`` (replacing an
        earlier ✏️ there); anyone's pending corrections from before ``stale`` may be dropped."""
        ...

    def awaited(self, chat: ChatRef, person: Person, since: datetime) -> int | None:
        """The turn the person owes a better answer to in ``chat``, if they pressed ✏️ after ``since``."""
        ...

    def drop(self, chat: ChatRef, person: Person, since: datetime) -> bool:
        """Forget the person's pending correction in ``chat``; whether one from after ``since`` was there."""
        ...

    def drop_person(self, person: Person) -> None:
        """Forget the person's pending corrections in every chat (/forget)."""
        ...


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain run reported; ``summary`` is ready to post in a chat."""

    ok: bool
    promoted: bool
    model: str | None
    summary: str


class CopyEraser(Protocol):
    def erase(
        self, person: Person | None, turn_ids: Collection[int] = (), conversation_ids: Collection[int] = ()
    ) -> ErasedCopies:
        """Take rows out of every copy outside the database (exports, datasets, runs).

        The rows of ``person`` (/forget; None for retention), holding one of
        ``turn_ids`` or from one of ``conversation_ids``: found by who they are
        and where they came from, never by their words.
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

    def utterance(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        """Say ``text`` (a sentence or a few) as mono 16-bit samples, with their rate; raise SynthesisFailed.

        A reply's sentences said one by one and joined are its voice note (``core.speaking``
        says them while the rest of the reply is written): piper says a whole text sentence by
        sentence too, with no pause between them.
        """
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


@runtime_checkable
class LanguageStore(Protocol):
    """Each turn's language and each person's ``/language`` (``core.languages``; ``storage.languages``)."""

    def language_preference(self, person: Person) -> str | None:
        """The person's ``/language`` code; None: detected from each message."""
        ...

    def set_language_preference(self, person: Person, code: str | None) -> None: ...

    def set_turn_language(
        self, turn_id: int, code: str | None, probability: float | None, asked: str | None = None
    ) -> None:
        """Store a turn's language and its probability; for a reply, also the language it was asked in."""
        ...


class PersonaStore(Protocol):
    """Personas and each chat's choice of one, as every process on the database sees them
    (``core.personas``; ``storage.personas.SqlPersonas``)."""

    def persona(self, name: str) -> Persona | None: ...

    def persona_for(self, conversation_id: int) -> Persona | None:
        """The persona of the conversation's chat: the one set for it, else the default; None: no default."""
        ...

    def chosen_persona(self, conversation_id: int) -> str | None:
        """The persona an admin set for the conversation's chat; None: none set (the default answers)."""
        ...

    def load_personas(self, personas: Sequence[Persona], by: str) -> list[str]:
        """Add or change each (a changed prompt gets the next version; ``is_default`` makes it the
        default); the names of those that changed. Others stored stay as they are."""
        ...


class ChatSettingsStore(Protocol):
    """Each chat's settings as every process on the database sees them (``core.chat_settings``;
    ``storage.chat_settings.SqlChatSettings``)."""

    def chat_settings(self, chat: ChatRef) -> ChatSettings: ...

    def conversation_settings(self, conversation_id: int) -> ChatSettings:
        """The settings of the conversation's chat (none set: all None)."""
        ...

    def set_chat_setting(
        self, chat: ChatRef, setting: Setting, value: str | int | None, by: str
    ) -> ChatSettings:
        """Store one setting (None: the deployment's); ``PersonaNotFound`` for a persona not stored."""
        ...

    def personas(self) -> list[Persona]:
        """Every stored persona, by name (the menus' choices)."""
        ...
