"""SQLAlchemy 2.0 tables. Rows never leave ``storage``: ``mapping`` turns them into core types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so that Alembic migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class PersonRow(Base):
    __tablename__ = "people"
    __table_args__ = (UniqueConstraint("platform", "user_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Whether this person's words may become training data: NULL means they never
    # said, and the IRIS_FEEDBACK_CONSENT setting (opt-in/opt-out) decides.
    consent: Mapped[bool | None]
    consent_at: Mapped[datetime | None]
    # /voice on|off: whether their replies are spoken; NULL: IRIS_TTS_REPLIES decides.
    reply_voice: Mapped[bool | None]
    # /language xx: the ISO 639-1 code their replies are asked in; NULL: detected from each message.
    language: Mapped[str | None] = mapped_column(String(8))


class ConversationRow(Base):
    """A run of turns in one chat (and thread); /reset closes it and the next message opens another."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_open", "platform", "chat_id", "thread_id", "owner_id", "closed_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    thread_id: Mapped[str] = mapped_column(String(128), default="")
    # The person whose private history this is; NULL for a group's shared history.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]


class TurnRow(Base):
    __tablename__ = "turns"
    # The platform's message id is unique per chat, so a redelivered update is
    # recognised and not answered twice. NULLs (bot replies) never collide.
    __table_args__ = (
        UniqueConstraint("platform", "chat_id", "platform_message_id", name="uq_turns_platform_message"),
        Index("ix_turns_conversation", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    reply_to_id: Mapped[int | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    from_voice: Mapped[bool] = mapped_column(default=False)
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    # Denormalised from the conversation for the uniqueness rule above.
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    platform_message_id: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(128), index=True)
    # A reply written in an A/B test: which experiment, and on which arm ("control"/"candidate").
    experiment_id: Mapped[int | None] = mapped_column(Id, index=True)
    arm: Mapped[str | None] = mapped_column(String(16))
    transcribe_ms: Mapped[float | None] = mapped_column(Float)
    generate_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)
    tokens: Mapped[int | None]
    speak_ms: Mapped[float | None] = mapped_column(Float)  # synthesizing the spoken reply
    spoken_seconds: Mapped[float | None] = mapped_column(Float)
    # The spoken reply itself, only with IRIS_TTS_KEEP_AUDIO; not loaded unless asked for.
    spoken_audio: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    error: Mapped[str | None] = mapped_column(Text)
    # A reply the correction memory answered (core.memory): which approved correction, and how
    # ("served": its text is the reply; "grounded": the model wrote it with the correction given).
    # No foreign key: the reply stays when the correction is rejected or forgotten.
    memory_correction_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    memory_mode: Mapped[str | None] = mapped_column(String(16))
    # The persona whose prompt wrote a reply, and that prompt's version (``core.personas``);
    # NULL: the configured IRIS_CHAT_SYSTEM_PROMPT. No foreign key: a removed persona's replies stay.
    persona: Mapped[str | None] = mapped_column(String(40))
    persona_version: Mapped[int | None]
    # The turn's language (ISO 639-1 where there is one) and how sure its detector was (core.languages):
    # a voice note's from the transcriber, a text's and a reply's from the text. A reply also keeps the
    # language it was asked in: ``language`` differing from it is a reply not in the person's language.
    language: Mapped[str | None] = mapped_column(String(8), index=True)
    language_probability: Mapped[float | None] = mapped_column(Float)
    asked_language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RatingRow(Base):
    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("turn_id", "person_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    value: Mapped[int] = mapped_column(SmallInteger)  # +1 or -1
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CorrectionRow(Base):
    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reviewer: Mapped[str | None] = mapped_column(String(256))
    reviewed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CorrectionMemoryRow(Base):
    """One wording of an approved correction's question and its embedding (``core.memory``).

    Per embedding model, so a deployment that changes it indexes again rather than comparing
    vectors of two models. Deleted with its correction.
    """

    __tablename__ = "correction_memory"
    __table_args__ = (Index("ix_correction_memory_model", "model", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    correction_id: Mapped[int] = mapped_column(ForeignKey("corrections.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(128))
    question: Mapped[str] = mapped_column(Text)  # what the person asked
    wording: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)  # the approved text when indexed
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    # A question the correction was served for and someone marked 👎: it does not ask this.
    negative: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The approved answer itself (``wording`` is the answer): what a match must stay close to.
    is_answer: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    gguf_path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str | None] = mapped_column(String(256))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]
    # Why its file last failed to load or answer (None: it loads), so that every process and
    # `iris models list` see a broken version, not only the process that tried it.
    load_error: Mapped[str | None] = mapped_column(Text)
    load_error_at: Mapped[datetime | None]


class ExperimentRow(Base):
    """An A/B test of a candidate model version against the active one, or of two personas on the
    active version (``kind`` "persona": ``candidate`` and ``control`` name personas) (core.experiments)."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="model", server_default="model")
    candidate: Mapped[str] = mapped_column(String(128))
    control: Mapped[str | None] = mapped_column(String(128))  # the version active when it started
    share: Mapped[float] = mapped_column(Float)
    min_ratings: Mapped[int]
    margin: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_by: Mapped[str | None] = mapped_column(String(256))
    # True while it runs, NULL once it ended: the unique constraint lets one run
    # at a time (NULLs never collide), on SQLite and PostgreSQL alike.
    running: Mapped[bool | None] = mapped_column(unique=True, default=True)
    ended_at: Mapped[datetime | None]
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_by: Mapped[str | None] = mapped_column(String(256))
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)


class InboxRow(Base):
    """A platform update stored before it was acknowledged (``storage.inbox``)."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("platform", "update_id", name="uq_inbox_update"),
        Index("ix_inbox_pending", "platform", "done_at", "order_key", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    update_id: Mapped[str] = mapped_column(String(64))
    order_key: Mapped[str] = mapped_column(String(256))  # one at a time per key, oldest first
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # emptied once handled
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)  # claims so far, counted across processes
    done_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]  # set aside: its handling stopped a process on every attempt
    # A press or a command: claimed apart from the messages, so that it never waits behind them.
    urgent: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The bot's messages shown for it so far ({"transcript": [ids], "reply": [ids]}): a process that
    # takes the update over from a killed one edits them rather than leaving a broken-off reply.
    shown: Mapped[dict[str, Any] | None]


class AuditRow(Base):
    """One admin action (or a person's consent change or /forget): who, when, what, on what."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class LimitEventRow(Base):
    """One thing a person did that a per-person limit counts (``storage.limits``), kept an hour.

    By platform and user id, not a ``people`` row: /forget must not give a person a fresh hour.
    """

    __tablename__ = "limit_events"
    __table_args__ = (Index("ix_limit_events_person", "platform", "user_id", "kind", "at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # "message", "voice", "press", "correction"
    amount: Mapped[float] = mapped_column(Float)  # 1, or the seconds of a voice note
    # Seconds since the epoch by the limiter's clock (which tests move), not the database's.
    at: Mapped[float] = mapped_column(Float, index=True)


class PendingCorrectionRow(Base):
    """Someone pressed ✏️ under a reply and owes a better answer in that chat (``storage.pending``).

    In the database, not a process's memory: the answer may reach another process, or come
    after a restart. One per person and chat; a newer ✏️ replaces it.
    """

    __tablename__ = "pending_corrections"
    __table_args__ = (UniqueConstraint("platform", "chat_id", "user_id", name="uq_pending_corrections_person"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    turn_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key: a reply gone by then is told so
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AnswerChoiceRow(Base):
    """🔁 under a reply: a second answer to the same question, and which one the person picked.

    One per reply (``core.choices``): the row is the claim that one process writes it.
    """

    __tablename__ = "answer_choices"
    __table_args__ = (Index("ix_answer_choices_choice", "choice", "decided_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    turn_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("turns.id", ondelete="CASCADE"), unique=True)
    person_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("people.id", ondelete="CASCADE"), index=True)
    second_text: Mapped[str | None] = mapped_column(Text)  # NULL while written, or lost with a process
    model_version: Mapped[str | None] = mapped_column(String(128))
    choice: Mapped[str | None] = mapped_column(String(16))  # NULL until picked: first|second|neither
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # the claim's time (a takeover renews it)
    written_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    exported_at: Mapped[datetime | None]  # used by an export: the choice no longer changes


class PersonaRow(Base):
    """A persona: a name, the system prompt replies are written with, and optional voice, temperature
    and greeting (``core.personas``). ``version`` goes up each time the prompt changes."""

    __tablename__ = "personas"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    prompt: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(default=1)
    voice: Mapped[str | None] = mapped_column(String(64))
    temperature: Mapped[float | None] = mapped_column(Float)
    greeting: Mapped[str | None] = mapped_column(Text)
    # True for the default persona, NULL for the others: the unique constraint lets one be the
    # default at a time (NULLs never collide), on SQLite and PostgreSQL alike.
    is_default: Mapped[bool | None] = mapped_column(unique=True)
    updated_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatSettingsRow(Base):
    """What admins set for one chat (``core.personas``): its persona, and room for the other
    per-chat settings of issue #29 (NULL everywhere: the deployment's setting decides)."""

    __tablename__ = "chat_settings"
    __table_args__ = (UniqueConstraint("platform", "chat_id", name="uq_chat_settings_chat"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    persona: Mapped[str | None] = mapped_column(String(40))  # NULL: the default persona
    spoken_replies: Mapped[str | None] = mapped_column(String(16))  # off|mirror|always (not wired yet)
    reply_length: Mapped[str | None] = mapped_column(String(16))  # not wired yet
    history_turns: Mapped[int | None]  # not wired yet
    updated_by: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebAdminRow(Base):
    """An admin of the web console with a sign-in link of their own (``core.web_admins``).

    Only the SHA-256 of their token is kept; ``name_key`` (the name casefolded) is unique, so
    "Ann" and "ann" can never be two admins the audit trail would name alike.
    """

    __tablename__ = "web_admins"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(128), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    session_key: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
