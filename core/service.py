"""The one service every adapter calls, made of parts by what each holds.

An adapter turns a platform event into an ``IncomingMessage``, iterates over
``service.replies.handle`` and renders each event. What else a person can do is
``service.feedback`` (rate, correct), ``service.privacy`` (reset, consent, /voice,
/forget) and ``service.again`` (🔁); what admins can do is ``service.feedback``
(review) and ``service.admin`` (stats, A/B, retrain, audit). No adapter holds a
business rule.

| part | module | holds |
| --- | --- | --- |
| ``replies`` | ``core.replies`` | who is waiting; recovery after a restart |
| ``listener`` | ``core.hearing`` | the transcriber and its line |
| ``writer`` | ``core.writing`` | the generator, A/B serving, the correction memory, the model's places |
| ``feedback`` | ``core.feedback`` | ratings, corrections, review, the ✏️ waits |
| ``privacy`` | ``core.privacy`` | the copies outside the database, /forget, retention |
| ``admin`` | ``core.admin`` | the retrainer, statistics, the audit trail |
| ``again`` | ``core.choices`` | 🔁 second answers and picks |
| ``personas`` | ``core.persona_admin`` | what admins change about personas (``/persona``), greetings |
| ``chat_settings`` | ``core.chat_settings`` | each chat's settings (``/settings``) and who may change them |
| ``languages`` | ``core.languages`` | each turn's language, each person's ``/language`` |
"""

from __future__ import annotations

import time

from core.ab import ABServing
from core.admin import Administration
from core.audit import AuditTrail
from core.chat_settings import ChatSettings, ChatSettingsBook, ReplyLength
from core.choices import AnotherAnswer, AnswerChoices
from core.config import ServiceConfig
from core.feedback import Feedback
from core.hearing import Listener
from core.languages import Languages
from core.limits import Clock, RateLimiter
from core.memory import CorrectionMemory
from core.persona_admin import PersonaAdmin
from core.personas import PersonaBook
from core.ports import (
    AuditLog,
    ConversationStore,
    CopyEraser,
    LanguageStore,
    LimitLedger,
    PendingCorrections,
    ReplyGenerator,
    Retrainer,
    Transcriber,
)
from core.privacy import Privacy
from core.replies import Replies
from core.speaking import ReplySpeaker, VoiceMode
from core.writing import ReplyWriter


class ChatService:
    """Builds the parts from the deployment's pieces; adapters call the part they need."""

    def __init__(
        self,
        store: ConversationStore,
        transcriber: Transcriber,
        generator: ReplyGenerator,
        config: ServiceConfig | None = None,
        retrainer: Retrainer | None = None,
        copies: CopyEraser | None = None,
        clock: Clock = time.time,
        audit: AuditLog | None = None,
        ab: ABServing | None = None,
        speaker: ReplySpeaker | None = None,
        ledger: LimitLedger | None = None,
        pending: PendingCorrections | None = None,
        memory: CorrectionMemory | None = None,
        choices: AnswerChoices | None = None,
        personas: PersonaBook | None = None,
        chat_settings: ChatSettingsBook | None = None,
    ) -> None:
        config = config or ServiceConfig()
        # The per-person limits count in ``ledger`` (the database: every process alike); None: in memory.
        limiter = RateLimiter(config.limits, config.exempt, clock, ledger)
        trail = AuditTrail(audit)
        self.listener = Listener(
            store,
            transcriber,
            limiter,
            config.chat.max_audio_seconds,
            config.parallel_transcripts,
            config.chat.stall_seconds,
        )
        self.chat_settings = chat_settings or ChatSettingsBook(None)
        self.chat_settings.deployment = self._deployment_settings
        self.writer = ReplyWriter(store, generator, config, ab, memory, personas, self.chat_settings)
        # Each turn's language and each person's /language (core.languages): in the store when it keeps them.
        heard: frozenset[str] | None = getattr(transcriber, "languages", None)
        self.languages = Languages(store if isinstance(store, LanguageStore) else None, heard)
        self.writer.languages = self.languages
        self.replies = Replies(store, self.listener, self.writer, limiter, config, speaker, self.languages)
        self.feedback = Feedback(store, limiter, trail, ab, memory, pending)
        self.again = AnotherAnswer(self.writer, self.feedback, choices)
        self.privacy = Privacy(store, trail, config.chat, limiter.clock, self.again, copies)
        self.admin = Administration(store, trail, retrainer, ab)
        # Admins' persona changes, a voice checked against the synthesizer in use (/persona, iris persona).
        self.personas = PersonaAdmin(self.writer.personas.store, trail, self._voice_problem)

    def _deployment_settings(self) -> ChatSettings:
        """What a chat with no settings of its own gets (the menus show it)."""
        speaker = self.replies.speaker
        return ChatSettings(
            spoken=speaker.config.replies if speaker is not None else VoiceMode.OFF,
            length=ReplyLength.NORMAL,
            history_turns=self.config.chat.history_turns,
        )

    def _voice_problem(self, voice: str) -> str | None:
        """Why the synthesizer in use cannot say ``voice``, or None (no speaker: nothing to check)."""
        speaker = self.replies.speaker
        return speaker.voice_problem(voice) if speaker is not None else None

    # Read-only views of the pieces the parts hold: to swap one, set it on the part that holds it.

    @property
    def config(self) -> ServiceConfig:
        return self.replies.config

    @property
    def store(self) -> ConversationStore:
        return self.replies.store

    @property
    def generator(self) -> ReplyGenerator:
        return self.writer.generator

    @property
    def transcriber(self) -> Transcriber:
        return self.listener.transcriber

    @property
    def speaker(self) -> ReplySpeaker | None:
        return self.replies.speaker

    @property
    def memory(self) -> CorrectionMemory | None:
        return self.writer.memory

    @property
    def limiter(self) -> RateLimiter:
        """The per-person limits every part counts against (one object: change its ``limits`` in place)."""
        return self.replies.limiter

    @property
    def ab(self) -> ABServing | None:
        return self.writer.ab
