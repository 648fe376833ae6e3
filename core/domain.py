"""The values that cross Iris's layers: messages in, events out, stored turns.

All of them are frozen dataclasses so that an adapter, the service and a store
can pass them around without one changing what another sees.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime


def storable_text(text: str) -> str:
    """``text`` with every lone surrogate and NUL replaced by U+FFFD, so that any database stores it.

    Python strings can hold both. A lone surrogate comes from a byte that was not UTF-8 on stdin
    (decoded with ``surrogateescape``) or a forged ``"\\ud800"`` in a JSON update; UTF-8 cannot
    hold it, so SQLite, PostgreSQL and llama.cpp's tokenizer refuse the whole text. PostgreSQL
    refuses a NUL in any text column. A high and low surrogate that stand next to each other are
    joined into the character they spell.
    """
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class CorrectionStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Person:
    """Someone who talks to the bot, as their platform names them."""

    platform: str
    user_id: str
    display_name: str | None = None

    def __post_init__(self) -> None:
        if self.display_name is not None:
            object.__setattr__(self, "display_name", storable_text(self.display_name))

    @property
    def actor(self) -> str:
        """How the audit trail names them: ``platform:user_id``."""
        return f"{self.platform}:{self.user_id}"

    @property
    def pseudonym(self) -> str:
        """How the audit trail names them once they used /forget (no id, but stable)."""
        digest = hashlib.sha256(f"iris-audit:{self.platform}:{self.user_id}".encode()).hexdigest()
        return f"forgotten:{digest[:16]}"


@dataclass(frozen=True)
class ChatRef:
    """Where a message was sent: a chat, and optionally a thread inside it."""

    platform: str
    chat_id: str
    thread_id: str | None = None


@dataclass(frozen=True)
class Audio:
    """An audio attachment as bytes, with what the platform said it was."""

    data: bytes
    mime_type: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class IncomingMessage:
    """One message from a person, already translated out of its platform's shape."""

    chat: ChatRef
    sender: Person
    text: str | None = None
    audio: Audio | None = None
    message_id: str | None = None
    # In a group each person has their own history unless the adapter says
    # the chat shares one.
    shared_history: bool = False
    # A spoken reply: None follows IRIS_TTS_REPLIES and the person's /voice; True or False decides.
    speak: bool | None = None
    # Delivered again after the process handling it stopped (a crash, a redeploy): if its
    # stored turn has no answer yet, it is answered now instead of refused as a duplicate.
    redelivered: bool = False

    def __post_init__(self) -> None:
        if self.text is not None:  # what the person typed reaches the store and the model whole
            object.__setattr__(self, "text", storable_text(self.text))


@dataclass(frozen=True)
class ChatMessage:
    """One entry of a prompt, in the OpenAI-style shape chat templates expect."""

    role: str
    content: str


@dataclass(frozen=True)
class Timings:
    transcribe_ms: float | None = None
    generate_ms: float | None = None
    total_ms: float | None = None
    tokens: int | None = None
    speak_ms: float | None = None  # synthesizing the spoken reply, when there was one
    spoken_seconds: float | None = None  # how long the spoken reply lasts


@dataclass(frozen=True)
class Turn:
    """A stored turn of a conversation."""

    id: int
    conversation_id: int
    role: Role
    text: str | None
    created_at: datetime
    from_voice: bool = False
    audio_seconds: float | None = None
    model_version: str | None = None
    timings: Timings = field(default_factory=Timings)
    error: str | None = None
    # The chat it was said or shown in (platform and chat id; no thread).
    chat: ChatRef | None = None
    reply_to_id: int | None = None  # a reply: the person's turn it answers
    memory_correction_id: int | None = None  # a reply the correction memory answered (core.memory)
    language: str | None = None  # ISO 639-1 where there is one; None: not detected (core.languages)
    language_probability: float | None = None


@dataclass(frozen=True)
class UserTurnReceipt:
    """What the store says after recording a person's turn."""

    turn_id: int
    conversation_id: int
    duplicate: bool = False  # delivered and stored before: not to be answered again
    reply_id: int | None = None  # a duplicate's stored reply, when it has one


@dataclass(frozen=True)
class ModelVersion:
    """A GGUF the bot can serve, as registered in the model registry."""

    id: int
    name: str
    gguf_path: str
    base_model: str | None = None
    created_at: datetime | None = None
    metrics: dict[str, object] = field(default_factory=dict)
    active: bool = False
    load_error: str | None = None  # why its file last failed to load or answer; None: it loads


class RatingOutcome(enum.StrEnum):
    CREATED = "created"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Correction:
    id: int
    turn_id: int
    person: Person
    text: str
    status: CorrectionStatus
    created_at: datetime
    prompt: str | None = None
    original_reply: str | None = None
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    served: int = 0  # replies the correction memory answered with it (core.memory)


@dataclass(frozen=True)
class ModelStats:
    model: str
    replies: int
    up: int
    down: int


@dataclass(frozen=True)
class PersonaStats:
    """Replies written with one persona's prompt (any version) and their ratings."""

    persona: str | None  # None: the configured IRIS_CHAT_SYSTEM_PROMPT
    replies: int
    up: int
    down: int


@dataclass(frozen=True)
class Stats:
    people: int
    conversations: int
    user_turns: int
    voice_turns: int
    replies: int
    corrections_pending: int
    corrections_approved: int
    corrections_rejected: int
    by_model: list[ModelStats]
    active_model: str | None
    active_model_error: str | None = None  # the active version's file does not load: why
    memory_served: int = 0  # replies that were an approved correction as it is (core.memory)
    memory_grounded: int = 0  # replies the model wrote with an approved correction given to it
    by_persona: list[PersonaStats] = field(default_factory=list)  # core.personas
    # core.languages: people's messages by language (None: not detected), most first, and replies
    # whose detected language is not the one they were asked in.
    by_language: list[tuple[str | None, int]] = field(default_factory=list)
    replies_off_language: int = 0

    @property
    def voice_share(self) -> float:
        return self.voice_turns / self.user_turns if self.user_turns else 0.0


@dataclass(frozen=True)
class ErasedCopies:
    """What /forget did outside the database: the files Iris wrote people's words to."""

    files: int = 0  # files rewritten or deleted
    rows: int = 0  # rows of training data dropped
    models: tuple[str, ...] = ()  # model versions already trained on the person's words
    unreachable: tuple[str, ...] = ()  # copies that could not be checked or rewritten
    removed: tuple[tuple[str, int], ...] = ()  # each file changed, and the rows dropped from it
    # Files beside the copies that may hold one and were left as they are, for the admins to look at.
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForgetReport:
    turns: int
    ratings: int
    corrections: int
    conversations: int
    # The person's own texts (messages, transcripts, corrections) as they were
    # stored, so that copies outside the database can be found; never shown.
    words: tuple[str, ...] = field(default=(), repr=False)
    copies: ErasedCopies | None = None
    known: bool = True  # False: nothing at all was stored about the person
    turn_ids: tuple[int, ...] = field(default=(), repr=False)  # the turns deleted, to find their copies
    # Refused: /forget was used moments ago; it can be used again after this many seconds.
    retry_after_s: float = 0.0

    @property
    def complete(self) -> bool:
        """Whether nothing Iris knows of still holds the person's words."""
        copies = self.copies
        return copies is None or not (copies.models or copies.unreachable or copies.unchecked)


@dataclass(frozen=True)
class PruneReport:
    """What retention removed (or, in a dry run, would remove) from the database."""

    conversations: int
    turns: int
    ratings: int
    corrections: int
    people: int
    kept_for_training: int  # old conversations kept without identity, their people having said yes
    cutoff: datetime
    dry_run: bool = False
    # What people said in the deleted conversations, for their copies outside the database; never shown.
    words: tuple[str, ...] = field(default=(), repr=False)
    copies: ErasedCopies | None = None
    conversation_ids: tuple[int, ...] = field(default=(), repr=False)  # deleted: their copies go too


class AuditAction(enum.StrEnum):
    """What the audit trail records: every admin action, and a person's consent change or /forget."""

    REVIEW_APPROVE = "review.approve"
    REVIEW_EDIT = "review.edit"  # approved with the reviewer's own text
    REVIEW_REJECT = "review.reject"
    RETRAIN_START = "retrain.start"
    RETRAIN_OUTCOME = "retrain.outcome"
    PROMOTE = "model.promote"
    ACTIVATE = "model.activate"
    ADD = "model.add"
    ROLLBACK = "model.rollback"
    AB_START = "ab.start"
    AB_STOP = "ab.stop"  # details: the decision, promote or rollback
    CONSENT = "consent"
    FORGET = "forget"
    PRUNE = "retention.prune"
    MEMORY_ADD = "memory.add"  # an approved correction indexed in the correction memory
    MEMORY_DROP = "memory.drop"  # a reviewed correction taken out of it
    # core.personas: details hold a persona's version and settings, never its prompt's words
    PERSONA_ADD = "persona.add"
    PERSONA_EDIT = "persona.edit"
    PERSONA_REMOVE = "persona.remove"  # details: the chats sent back to the default
    PERSONA_USE = "persona.use"  # an admin set a chat's persona; target: platform:chat_id
    PERSONA_FILE = "persona.file"  # the personas file changed stored personas
    # core.chat_settings: a chat's spoken replies, reply length or earlier turns; target: platform:chat_id
    SETTINGS_CHANGE = "settings.change"
    # core.web_admins: an admin of the web console added or removed; target: web:<name>, never a token
    WEB_ADMIN_ADD = "web_admin.add"
    WEB_ADMIN_REMOVE = "web_admin.remove"


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail: who did what to what, when, with the details that matter."""

    id: int
    at: datetime
    actor: str  # "telegram:123", "discord:456", "console:alice", or a pseudonym after /forget
    action: AuditAction
    target: str | None = None
    details: dict[str, object] = field(default_factory=dict)


# --- What the service yields while it handles a message -----------------------


@dataclass(frozen=True)
class Transcribed:
    """The words heard in a voice note; adapters show them before the reply."""

    text: str
    audio_seconds: float


@dataclass(frozen=True)
class Queued:
    """The reply waits for the model: ``ahead`` replies will be written first."""

    ahead: int

    def text(self) -> str:
        if self.ahead == 0:
            return "⏳ Many people are asking right now: yours is next."
        noun = "reply" if self.ahead == 1 else "replies"
        return f"⏳ Many people are asking right now: {self.ahead} {noun} ahead of yours."


@dataclass(frozen=True)
class ReplyDelta:
    """The reply so far (``text``) and what was just added (``delta``)."""

    text: str
    delta: str


@dataclass(frozen=True)
class ReplyDone:
    turn_id: int
    text: str
    model: str
    timings: Timings
    memory: tuple[int, str] | None = None  # the approved correction that answered, and how (core.memory)
    persona: str | None = None  # the persona whose prompt wrote it; None: the configured prompt (core.personas)
    language: str | None = None  # the reply's language when its detector is sure (core.languages); None: unsure


class NoticeKind(enum.StrEnum):
    DUPLICATE = "duplicate"
    EMPTY = "empty"
    NOTHING_HEARD = "nothing_heard"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    UNREADABLE_AUDIO = "unreadable_audio"
    MODEL_FAILED = "model_failed"
    STORE_FAILED = "store_failed"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_WAITING = "too_many_waiting"
    SPEECH_FAILED = "speech_failed"  # after a finished reply: the text stays, the voice is missing


@dataclass(frozen=True)
class Notice:
    """Something the person must be told instead of (or before) a reply.

    ``text`` is ready to show; adapters may use ``kind`` to choose a style.
    """

    kind: NoticeKind
    text: str
    turn_id: int | None = None


@dataclass(frozen=True)
class Speech:
    """Spoken words as a voice note: OGG/Opus, 48 kHz, mono."""

    ogg: bytes = field(repr=False)
    seconds: float
    waveform: bytes = field(repr=False)  # at most 256 bytes of loudness, 0-255, for Discord
    truncated: bool = False  # cut at IRIS_TTS_MAX_SECONDS (the text reply is complete)


@dataclass(frozen=True)
class Spoken:
    """The finished reply, spoken; it follows its ``ReplyDone``."""

    turn_id: int
    speech: Speech
    speak_ms: float


ServiceEvent = Transcribed | Queued | ReplyDelta | ReplyDone | Notice | Spoken
