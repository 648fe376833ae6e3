"""The reply path: a message in, its turn stored, heard, answered and spoken.

``Replies.handle`` is what every adapter iterates over for a message: it stores the
person's turn before anything can go wrong, transcribes a voice note, has
``core.writing.ReplyWriter`` write the reply and ``core.speaking`` speak it. A turn that a
stopped process left unanswered comes back through ``recover``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from datetime import datetime, timedelta

from core.config import ServiceConfig
from core.domain import (
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    ReplyDelta,
    ReplyDone,
    ServiceEvent,
    Transcribed,
    UserTurnReceipt,
)
from core.hearing import Listener
from core.i18n import N_, _, ngettext
from core.input_checks import checked_input
from core.languages import Languages, asked
from core.limits import RateLimiter, Refused
from core.ports import (
    ConversationStore,
    UnansweredTurn,
)
from core.speaking import ReplySpeaker
from core.writing import ReplyWriter, mark_failed

log = logging.getLogger(__name__)

# Why a recovered turn has no reply, until it has one (kept if the recovering process stops too).
INTERRUPTED = N_("A restart interrupted this message before it was answered.")
LOST_IN_RESTART = N_(
    "Your voice message was lost in a restart before I could listen to it; please send it again."
)


class Replies:
    """Takes each message from store to spoken reply; holds who is waiting for an answer."""

    def __init__(
        self,
        store: ConversationStore,
        listener: Listener,
        writer: ReplyWriter,
        limiter: RateLimiter,
        config: ServiceConfig,
        speaker: ReplySpeaker | None = None,
        languages: Languages | None = None,
    ) -> None:
        self.store = store
        self.listener = listener
        self.writer = writer
        self.limiter = limiter
        self.config = config
        self.speaker = speaker  # spoken replies (core.speaking); None: text only
        self.languages = languages or Languages(None)  # each turn's language, /language (core.languages)
        self._in_progress: Counter[str] = Counter()  # per person: messages being answered or waiting

    @property
    def waiting_for_model(self) -> int:
        """How many replies wait for a place at the model."""
        return self.writer.waiting

    async def handle(self, message: IncomingMessage) -> AsyncGenerator[ServiceEvent, None]:
        """Store the person's turn, then yield the transcript, the reply and its receipt.

        Never raises for bad input or a failing model: the person gets a
        ``Notice`` and their turn stays stored with the reason it got no reply.
        """
        started = time.perf_counter()
        problem = checked_input(message, self.config.chat)
        if problem is not None and problem.kind is NoticeKind.EMPTY:
            yield problem
            return
        # A message taken over from a stopped process was admitted there: its own count must not refuse it.
        refusal = None if message.redelivered else await self._refusal(message.sender)
        if refusal is not None:  # refused before anything is stored
            yield refusal
            return
        sender = message.sender.actor
        self._in_progress[sender] += 1  # no await since the count in _refusal: this process's is exact
        try:
            async with aclosing(self._handle(message, problem, started)) as events:
                async for event in events:
                    yield event
        finally:
            self._in_progress[sender] -= 1
            if not self._in_progress[sender]:
                del self._in_progress[sender]

    async def _refusal(self, sender: Person) -> Notice | None:
        """Why a new message from ``sender`` is refused now (over the hour's messages, or too many
        waiting for an answer), or None. Counted across processes, so two messages sent to two
        processes at the same moment may both pass the last place."""

        def count() -> tuple[Refused | None, int]:
            return self.limiter.check_message(sender), self.limiter.unanswered(sender)

        refused, stored = await asyncio.to_thread(count)
        if refused is not None:
            return Notice(NoticeKind.RATE_LIMITED, refused.text(self.limiter.clock()))
        # This process's count sees its messages not stored yet; the stored one every process's.
        waiting = max(self._in_progress[sender.actor], stored)
        if waiting >= self.config.chat.max_queued_per_person:
            return Notice(NoticeKind.TOO_MANY_WAITING, _too_many_waiting(waiting))
        return None

    async def _handle(
        self, message: IncomingMessage, problem: Notice | None, started: float
    ) -> AsyncGenerator[ServiceEvent, None]:
        try:
            receipt = await asyncio.to_thread(
                self.store.record_user_turn,
                message.chat,
                message.sender,
                text=message.text if message.audio is None else None,
                from_voice=message.audio is not None,
                message_id=message.message_id,
                shared_history=message.shared_history,
                resume=message.redelivered,
            )
        except Exception:
            log.exception("could not store an incoming message")
            yield Notice(
                NoticeKind.STORE_FAILED,
                _("Sorry, I could not save your message. Please try again in a moment."),
            )
            return
        if receipt.duplicate:
            stored = await self._stored_reply(receipt) if message.redelivered else None
            # Taken over from a process that stopped after storing the reply but maybe before
            # showing it whole: show it (again); a plain second delivery is not answered twice.
            yield stored or Notice(NoticeKind.DUPLICATE, _("Already answered."), receipt.turn_id)
            return
        if not message.redelivered:  # taken over from a stopped process: counted there, not twice
            await asyncio.to_thread(self.limiter.note_message, message.sender)
        async with aclosing(self._answer(receipt, message, problem, started)) as events:
            async for event in events:
                yield event

    async def _answer(
        self, receipt: UserTurnReceipt, message: IncomingMessage, problem: Notice | None, started: float
    ) -> AsyncGenerator[ServiceEvent, None]:
        """Everything after the turn is stored: a received message and a recovered one go this way."""
        if problem is not None:
            await mark_failed(self.store, receipt.turn_id, problem.text)
            yield Notice(problem.kind, problem.text, receipt.turn_id)
            return

        user_text = message.text or ""
        transcribe_ms: float | None = None
        languages = self.languages
        preference = await languages.preference(message.sender)  # the person's /language, else None
        if message.audio is not None:
            hear_in = preference if languages.hears(preference) else None
            audio = message.audio.data
            heard = await self.listener.hear(receipt, message.sender, audio, message.redelivered, hear_in)
            if isinstance(heard, Notice):
                yield heard
                return
            user_text, transcribe_ms, detected = heard.text, heard.ms, heard.language
            yield Transcribed(user_text, heard.seconds)
        else:
            detected = await languages.detect(user_text)
        await languages.record(receipt.turn_id, detected)
        language = asked(preference, detected)  # the language the reply is asked in

        # The chat's settings (core.chat_settings), read once for this reply: spoken, length, earlier turns.
        settings = await self.writer.chat_settings.for_conversation(receipt.conversation_id)
        speaking = self.speaker is not None and await self.speaker.wanted(message, settings.spoken)
        speaker = self.speaker if speaking else None
        # Who writes it (an A/B test's arm, the chat's persona), read once: the voice is the same persona's,
        # when it has one the synthesizer knows (core.personas).
        chosen = await self.writer.who_answers(receipt.conversation_id)
        voice = await speaker.voice(chosen[1]) if speaker else None
        if speaker is not None and voice is not None:  # in the language asked for, when a voice speaks it
            voice = await speaker.in_language(voice, language) or voice
        early = speaker.early(voice, languages.detector) if speaker is not None else None  # said as written
        done: ReplyDone | None = None
        try:
            # aclosing: if the adapter stops listening, the reply generator (and the
            # model's job behind it) is closed now, in order, not by the garbage collector.
            async with aclosing(
                self.writer.reply(
                    receipt, message.sender, user_text, started, transcribe_ms, settings, language, chosen
                )
            ) as events:
                async for event in events:
                    yield event
                    done = event if isinstance(event, ReplyDone) else done
                    if early is not None and isinstance(event, ReplyDelta):
                        early.feed(event.text)
            if speaker is not None and done is not None:  # the text is shown whole first
                spoken = await speaker.speak(done.turn_id, done.text, early, voice, done.language)
                if spoken is not None:
                    yield spoken
        finally:
            if early is not None:
                early.cancel()

    async def _stored_reply(self, receipt: UserTurnReceipt) -> ReplyDone | None:
        """The reply stored for a turn, as the event that shows it, or None when there is none."""
        if receipt.reply_id is None:
            return None
        reply = await asyncio.to_thread(self.store.get_turn, receipt.reply_id)
        if reply is None or not reply.text:
            return None
        return ReplyDone(reply.id, reply.text, reply.model_version or "", reply.timings)

    async def set_voice(self, person: Person, on: bool | None) -> bool:
        """Record ``/voice on|off`` (None: back to the deployment's mode); False when speech is not set up."""
        if self.speaker is None:
            return False
        await self.speaker.set_preference(person, on)
        return True

    async def unanswered(self, platform: str, started_at: datetime) -> list[UnansweredTurn]:
        """Turns of ``platform`` that processes which stopped left unanswered, oldest first.

        Only those stored within ``ChatConfig.recover_minutes`` before ``started_at`` (when this
        process started: what it stored itself is its own to answer); none when that is 0.
        """
        minutes = self.config.chat.recover_minutes
        if minutes <= 0:
            return []
        since = started_at - timedelta(minutes=minutes)
        return await asyncio.to_thread(self.store.unanswered_turns, platform, since, started_at)

    async def recover(
        self, turn: UnansweredTurn, message: IncomingMessage | None
    ) -> AsyncGenerator[ServiceEvent, None]:
        """Answer a turn a stopped process stored and left unanswered, as ``handle`` answers a message.

        ``message`` is the turn's message read again from the platform; None when its voice note
        could not be downloaded again (the person is asked to send it again). The turn is first
        claimed in the store, so of several processes recovering it only one answers, once; a
        process stopping during recovery leaves it failed with ``INTERRUPTED``, never answered
        twice. Nothing is yielded for a turn another process took or answered meanwhile.
        """
        if not await asyncio.to_thread(self.store.claim_unanswered, turn.turn_id, INTERRUPTED):
            return
        if message is None:
            text = _(LOST_IN_RESTART if turn.from_voice else INTERRUPTED)
            await mark_failed(self.store, turn.turn_id, text)
            yield Notice(NoticeKind.UNREADABLE_AUDIO, text, turn.turn_id)
            return
        receipt = UserTurnReceipt(turn.turn_id, turn.conversation_id)
        sender = message.sender.actor
        self._in_progress[sender] += 1
        try:
            # Taken over like a redelivered update: the stopped process may have charged its voice already.
            message = replace(message, redelivered=True)
            problem = checked_input(message, self.config.chat)
            events = self._answer(receipt, message, problem, time.perf_counter())
            async with aclosing(events) as answer:
                async for event in answer:
                    yield event
        finally:
            self._in_progress[sender] -= 1
            if not self._in_progress[sender]:
                del self._in_progress[sender]

    async def give_up(self, turn: UnansweredTurn, reason: str) -> bool:
        """Mark a stored, unanswered turn failed with ``reason`` (its message or channel is gone).

        False when another process claimed or answered it meanwhile.
        """
        return await asyncio.to_thread(self.store.claim_unanswered, turn.turn_id, reason)


def _too_many_waiting(count: int) -> str:
    return ngettext(
        "I am still answering your last message; please wait for the answer, then send this one again.",
        "I am still answering your last {count} messages; "
        "please wait for the answer, then send this one again.",
        count,
    ).format(count=count)
