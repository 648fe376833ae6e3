"""The one service every adapter calls.

An adapter turns a platform event into an ``IncomingMessage``, iterates over
``ChatService.handle`` and renders each event. Everything else the person can
do (rate, correct, reset, forget) and what admins can do (stats, review) is a
method here too, so that no adapter holds a business rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import Field

from core.ab import ABServing, Choice, decide_if_due, latest_report
from core.audit import memory_entry, prune_details, retention_cutoff, retrain_entries, review_entry
from core.choices import AnotherAnswer, AnswerChoices
from core.domain import (
    AuditAction,
    AuditEntry,
    ChatRef,
    Correction,
    CorrectionStatus,
    ErasedCopies,
    ForgetReport,
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    PruneReport,
    RatingOutcome,
    ReplyDone,
    Role,
    ServiceEvent,
    Stats,
    Timings,
    Transcribed,
    Turn,
    UserTurnReceipt,
)
from core.drafting import Draft, follow, stream_in_thread
from core.experiments import ABReport
from core.limits import Clock, RateLimiter, RateLimits, Refused
from core.memory import CorrectionMemory, MemoryMode, Recall, grounding
from core.ports import (
    AudioError,
    AudioTooLong,
    AuditLog,
    ConversationStore,
    CopyEraser,
    Generation,
    LimitLedger,
    PendingCorrections,
    ReplyGenerator,
    Retrainer,
    RetrainOutcome,
    ServerUnavailable,
    Transcriber,
    UnansweredTurn,
)
from core.prompt import PromptTooLong, build_prompt
from core.scheduling import FairQueue
from core.speaking import ReplySpeaker

log = logging.getLogger(__name__)

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


class RetrainBusy(RuntimeError):
    """A retrain is already running; one at a time."""


class UnknownReply(LookupError):
    """A rating or correction names a turn that is not one of the bot's replies in that chat.

    A reply shown in another chat is refused the same way as one that does not
    exist: button data comes back from the client, and a forged press must
    neither act on nor reveal a reply elsewhere.
    """


class FeedbackLimited(RuntimeError):
    """A press or correction over the person's hourly limit; nothing was stored.

    ``str(error)`` is the sentence to show the person: the limit and when to come back.
    """


class ChatService:
    """Turns incoming messages into stored turns and streamed replies."""

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
    ) -> None:
        self.store = store
        self.transcriber = transcriber
        self.generator = generator
        self.config = config or ServiceConfig()
        self.retrainer = retrainer
        self.copies = copies
        # The per-person limits count in ``ledger`` (the database: every process alike); None: in memory.
        self.limiter = RateLimiter(self.config.limits, self.config.exempt, clock, ledger)
        self.audit = audit
        self.ab = ab  # A/B tests of model versions; None: the active version answers everyone
        self._retraining = asyncio.Lock()
        self._sweeping = asyncio.Lock()  # one /forget sweep of the copies at a time
        self._forgetting: dict[str, asyncio.Task[ForgetReport]] = {}  # per person: the /forget under way
        self._forgot_at: dict[str, float] = {}  # per person: when their last /forget ran (without an audit log)
        self._in_progress: Counter[str] = Counter()  # per person: messages being answered or waiting
        self._model_queue = FairQueue(self.config.parallel_replies)
        self._model_threads = ThreadPoolExecutor(self.config.parallel_replies, thread_name_prefix="reply")
        self._speech_queue = FairQueue(self.config.parallel_transcripts)
        self.speaker = speaker  # spoken replies (core.speaking); None: text only
        # Who owes a better answer after ✏️ (Telegram). None: nothing is awaited and
        # await_correction refuses (a service a test builds for messages alone).
        self.pending = pending
        # 🔁: a second answer to a reply and the person's pick, a DPO pair (core.choices).
        self.again = AnotherAnswer(self, choices)
        # Approved corrections answer the questions they fix before any retrain (core.memory); None: off.
        self.memory = memory

    @property
    def waiting_for_model(self) -> int:
        """How many replies wait for a place at the model."""
        return self._model_queue.waiting

    # --- messages -------------------------------------------------------------

    async def handle(self, message: IncomingMessage) -> AsyncGenerator[ServiceEvent, None]:
        """Store the person's turn, then yield the transcript, the reply and its receipt.

        Never raises for bad input or a failing model: the person gets a
        ``Notice`` and their turn stays stored with the reason it got no reply.
        """
        started = time.perf_counter()
        problem = self._check_input(message)
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
                NoticeKind.STORE_FAILED, "Sorry, I could not save your message. Please try again in a moment."
            )
            return
        if receipt.duplicate:
            stored = await self._stored_reply(receipt) if message.redelivered else None
            # Taken over from a process that stopped after storing the reply but maybe before
            # showing it whole: show it (again); a plain second delivery is not answered twice.
            yield stored or Notice(NoticeKind.DUPLICATE, "Already answered.", receipt.turn_id)
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
            await self._fail(receipt.turn_id, problem.text)
            yield Notice(problem.kind, problem.text, receipt.turn_id)
            return

        user_text = message.text or ""
        transcribe_ms: float | None = None
        if message.audio is not None:
            heard = await self._transcribe(receipt, message.sender, message.audio.data, message.redelivered)
            if isinstance(heard, Notice):
                yield heard
                return
            user_text, transcribe_ms = heard.text, heard.ms
            yield Transcribed(user_text, heard.seconds)

        speak = self.speaker is not None and await self.speaker.wanted(message)
        done: ReplyDone | None = None
        # aclosing: if the adapter stops listening, the reply generator (and the
        # model thread behind it) is closed now, in order, not by the garbage collector.
        async with aclosing(self._reply(receipt, message.sender, user_text, started, transcribe_ms)) as events:
            async for event in events:
                yield event
                done = event if isinstance(event, ReplyDone) else done
        if speak and done is not None and self.speaker is not None:  # the text is shown whole first
            spoken = await self.speaker.speak(done.turn_id, done.text)
            if spoken is not None:
                yield spoken

    def _check_input(self, message: IncomingMessage) -> Notice | None:
        if message.audio is not None:
            size = len(message.audio.data)
            if size == 0:
                return Notice(NoticeKind.UNREADABLE_AUDIO, "That audio file is empty.")
            if size > self.config.chat.max_file_bytes:
                limit_mb = self.config.chat.max_file_mb
                return Notice(NoticeKind.TOO_LARGE, f"That file is too large: the limit is {limit_mb:g} MB.")
            return None
        if not (message.text or "").strip():
            return Notice(NoticeKind.EMPTY, "Send me a voice note or a text message.")
        if len(message.text or "") > self.config.chat.max_text_chars:
            return Notice(
                NoticeKind.TOO_LONG,
                f"That message is too long for me: the limit is {self.config.chat.max_text_chars} characters.",
            )
        return None

    async def _fail(self, turn_id: int, reason: str, audio_seconds: float | None = None) -> None:
        try:
            await asyncio.to_thread(self.store.mark_failed, turn_id, reason, audio_seconds)
        except Exception:
            log.exception("could not note why turn %s failed", turn_id)

    async def _transcribe(
        self, receipt: UserTurnReceipt, sender: Person, audio: bytes, charged: bool = False
    ) -> _Heard | Notice:
        turn_id = receipt.turn_id
        limit = self.config.chat.max_audio_seconds
        try:
            async with self._speech_queue.slot(sender.actor):
                began = time.perf_counter()
                # Decoded once, by its real length (stopped at the limit, whatever the header claims):
                # that length, not the claimed one, is what the voice minutes are charged.
                decoded = await asyncio.to_thread(self.transcriber.decode, audio, limit)
                # ``charged``: a note taken over from a process killed after charging it is neither
                # charged again nor refused for that charge (the person would lose its reply to a crash).
                take = self.limiter.take_voice
                refused = None if charged else await asyncio.to_thread(take, sender, decoded.seconds)
                if refused is not None:
                    text = refused.text(self.limiter.clock())
                    await self._fail(turn_id, text, decoded.seconds)
                    return Notice(NoticeKind.RATE_LIMITED, text, turn_id)
                transcript = await asyncio.to_thread(self.transcriber.transcribe, decoded)
                ms = (time.perf_counter() - began) * 1000
        except AudioTooLong as too_long:
            text = f"That voice note is too long: I can take up to {limit:.0f} s."
            await self._fail(turn_id, text, too_long.seconds)
            return Notice(NoticeKind.TOO_LONG, text, turn_id)
        except AudioError as bad:
            text = f"I could not read that audio ({bad}). Voice notes, MP3, M4A, OGG and WAV files work."
            await self._fail(turn_id, text)
            return Notice(NoticeKind.UNREADABLE_AUDIO, text, turn_id)
        except ServerUnavailable as down:
            log.warning("turn %s not transcribed: %s", turn_id, down)
            text = f"I cannot listen right now ({down}). Please send it again in a minute."
            await self._fail(turn_id, text)
            return Notice(NoticeKind.MODEL_FAILED, text, turn_id)
        except Exception:
            log.exception("transcription failed for turn %s", turn_id)
            text = "Sorry, something went wrong while I listened to that. Please try again."
            await self._fail(turn_id, text)
            return Notice(NoticeKind.MODEL_FAILED, text, turn_id)
        if not transcript.text.strip():
            text = "I didn't hear any speech in that recording."
            await self._fail(turn_id, text, transcript.audio_seconds)
            return Notice(NoticeKind.NOTHING_HEARD, text, turn_id)
        try:
            await asyncio.to_thread(
                self.store.set_transcript, turn_id, transcript.text, transcript.audio_seconds, ms
            )
        except Exception:
            log.exception("could not store the transcript of turn %s", turn_id)
        return _Heard(transcript.text.strip(), transcript.audio_seconds, ms)

    async def _stored_reply(self, receipt: UserTurnReceipt) -> ReplyDone | None:
        """The reply stored for a turn, as the event that shows it, or None when there is none."""
        if receipt.reply_id is None:
            return None
        reply = await asyncio.to_thread(self.store.get_turn, receipt.reply_id)
        if reply is None or not reply.text:
            return None
        return ReplyDone(reply.id, reply.text, reply.model_version or "", reply.timings)

    async def _reply(
        self,
        receipt: UserTurnReceipt,
        sender: Person,
        user_text: str,
        started: float,
        transcribe_ms: float | None,
    ) -> AsyncGenerator[ServiceEvent, None]:
        turn_id = receipt.turn_id
        try:
            history = await asyncio.to_thread(
                self.store.history, receipt.conversation_id, turn_id, self.config.chat.history_turns
            )
        except Exception:
            log.exception("could not read the history of turn %s", turn_id)
            history = []
        choice = await self._choose_model(receipt.conversation_id)
        recall = await self._recall(user_text, choice.generator.model_name)
        # The model writes in a task of its own: it never waits for the chat to
        # show what it wrote (a flood wait or a slow network in one chat must not
        # hold the model for every other chat); the chat shows the latest text.
        draft = Draft()
        writer = asyncio.create_task(self._write(sender, history, user_text, draft, choice.generator, recall))
        try:
            async for event in follow(draft, self.config.chat.queue_notice_seconds):
                yield event
            written = await writer
        except PromptTooLong:
            notice = "That message is too long for me to answer in one go; please shorten it."
            await self._fail(turn_id, notice)
            yield Notice(NoticeKind.TOO_LONG, notice, turn_id)
            return
        except ServerUnavailable as down:
            log.warning("turn %s not answered: %s", turn_id, down)
            notice = f"I cannot answer right now ({down}). Please try again in a minute."
            await self._fail(turn_id, notice)
            yield Notice(NoticeKind.MODEL_FAILED, notice, turn_id)
            return
        except Exception:
            log.exception("generation failed for turn %s", turn_id)
            notice = "Sorry, I could not come up with a reply just now. Please try again."
            await self._fail(turn_id, notice)
            yield Notice(NoticeKind.MODEL_FAILED, notice, turn_id)
            return
        finally:
            if not writer.done():  # the adapter stopped listening: stop the model too
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        text = draft.text.strip()
        memory = (recall.correction_id, recall.mode.value) if recall else None
        if not text:
            notice = "Sorry, I had nothing to say to that. Try asking another way."
            await self._fail(turn_id, notice)
            yield Notice(NoticeKind.MODEL_FAILED, notice, turn_id)
            return
        timings = Timings(
            transcribe_ms=transcribe_ms,
            generate_ms=written.generate_ms,
            total_ms=(time.perf_counter() - started) * 1000,
            tokens=written.tokens,
        )
        try:
            reply_id = await asyncio.to_thread(
                self.store.record_reply,
                receipt.conversation_id,
                turn_id,
                text,
                written.model,
                timings,
                choice.experiment,
                memory,
            )
        except Exception:
            log.exception("could not store the reply to turn %s", turn_id)
            yield Notice(
                NoticeKind.STORE_FAILED,
                "I answered, but could not save the answer, so it cannot be rated.",
                turn_id,
            )
            return
        yield ReplyDone(reply_id, text, written.model, timings, memory)

    async def _choose_model(self, conversation_id: int) -> Choice:
        """The model that answers: the active one, or an A/B test's arm for this conversation."""
        if self.ab is None:
            return Choice(self.generator)
        try:
            return await asyncio.to_thread(self.ab.choose, conversation_id, self.generator)
        except Exception:
            log.exception("could not read the running experiment; the active model answers")
            return Choice(self.generator)

    async def _recall(self, text: str, model: str) -> Recall | None:
        """The approved correction this message asks, if the memory has one (a failing memory: none)."""
        if self.memory is None:
            return None
        try:
            return await asyncio.to_thread(self.memory.recall, text, model)
        except Exception:
            log.exception("the correction memory could not be searched; the model answers alone")
            return None

    async def _write(
        self,
        sender: Person,
        history: Sequence[Turn],
        user_text: str,
        draft: Draft,
        generator: ReplyGenerator,
        recall: Recall | None = None,
    ) -> _Written:
        """Wait for a place at the model, then write the whole reply into ``draft``.

        Places go round-robin per person: in a busy group, one person's many
        notes do not make everyone else wait behind all of them. Both arms of
        an A/B test share the places. A reply served from the correction memory
        needs no place: the approved answer is the reply.
        """
        options = self.config.generation
        system_prompt = self.config.chat.system_prompt
        try:
            if recall is not None and recall.mode is MemoryMode.SERVED:
                draft.add(recall.answer)
                tokens = await asyncio.to_thread(generator.count_tokens, recall.answer)
                return _Written(generator.model_name, 0.0, tokens)
            if recall is not None:
                system_prompt = grounding(recall, system_prompt)
            async with self._model_queue.slot(sender.actor, on_place=draft.queued):
                draft.queued(None)
                budget = generator.context_tokens - options.max_tokens
                messages = await asyncio.to_thread(
                    build_prompt,
                    system_prompt,
                    history,
                    user_text,
                    generator.count_tokens,
                    budget,
                )
                began = time.perf_counter()
                pieces = stream_in_thread(generator, messages, options, self._model_threads)
                async with aclosing(pieces):
                    async for piece in pieces:
                        draft.add(piece)
                generate_ms = (time.perf_counter() - began) * 1000
                model = generator.model_name
            tokens = await asyncio.to_thread(generator.count_tokens, draft.text)
            return _Written(model, generate_ms, tokens)
        finally:
            draft.finish()

    # --- recovery after a restart --------------------------------------------------

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
            text = LOST_IN_RESTART if turn.from_voice else INTERRUPTED
            await self._fail(turn.turn_id, text)
            yield Notice(NoticeKind.UNREADABLE_AUDIO, text, turn.turn_id)
            return
        receipt = UserTurnReceipt(turn.turn_id, turn.conversation_id)
        sender = message.sender.actor
        self._in_progress[sender] += 1
        try:
            # Taken over like a redelivered update: the stopped process may have charged its voice already.
            message = replace(message, redelivered=True)
            events = self._answer(receipt, message, self._check_input(message), time.perf_counter())
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

    # --- feedback -------------------------------------------------------------

    async def rate(self, person: Person, turn_id: int, up: bool, where: ChatRef | None = None) -> RatingOutcome:
        """Store 👍 (``up``) or 👎 from a person on one of the bot's replies.

        Chat adapters pass ``where``, the chat the button was pressed in (as the
        platform says, never from the button's data): a reply shown in another
        chat raises ``UnknownReply`` and nothing is stored. Only trusted local
        callers (the CLI, the console) leave it out.

        Presses in a chat count against the person's hourly limit (``RateLimits.presses_per_hour``),
        forged or repeated ones too: past it, ``FeedbackLimited`` is raised and nothing is stored.
        """
        if where is not None:
            await self._take(self.limiter.take_press, person)
        await self.check_reply(turn_id, where)
        outcome = await asyncio.to_thread(self.store.rate, person, turn_id, 1 if up else -1)
        if not up and outcome is not RatingOutcome.UNCHANGED:
            await self._dispute(turn_id)
        if self.ab is not None and outcome is not RatingOutcome.UNCHANGED:
            await self._decide_experiment()
        return outcome

    async def _dispute(self, reply_id: int) -> None:
        """A 👎 on a reply the memory served: its question is not one the correction answers."""
        if self.memory is None:
            return
        try:
            reply = await asyncio.to_thread(self.store.get_turn, reply_id)
            if reply is None or reply.memory_correction_id is None or reply.reply_to_id is None:
                return
            asked = await asyncio.to_thread(self.store.get_turn, reply.reply_to_id)
            if asked is not None and asked.text:
                await asyncio.to_thread(self.memory.dispute, reply.memory_correction_id, asked.text)
        except Exception:  # the rating is stored; the memory learns from the next one
            log.exception("could not note the 👎 on reply %s in the correction memory", reply_id)

    async def _decide_experiment(self) -> None:
        """End a running A/B test once both arms have the ratings it was started to wait for."""
        assert self.ab is not None
        try:
            await asyncio.to_thread(decide_if_due, self.ab.experiments, self.ab.registry, self.audit)
        except Exception:
            log.exception("could not decide the running experiment; the next rating tries again")

    async def correct(self, person: Person, turn_id: int, text: str, where: ChatRef | None = None) -> int:
        """Store a better answer for a reply; it waits for review before training uses it.

        ``where`` as for ``rate``; in a chat, corrections count against
        ``RateLimits.corrections_per_hour`` (``FeedbackLimited`` past it).
        """
        text = text.strip()
        if not text:
            raise ValueError("a correction needs some text")
        if where is not None:
            await self._take(self.limiter.take_correction, person)
        await self.check_reply(turn_id, where)
        return await asyncio.to_thread(self.store.add_correction, person, turn_id, text)

    async def _take(self, take: Callable[[Person], Refused | None], person: Person) -> None:
        # Checked and counted as one step (core.limits), across processes: two presses at once
        # cannot both pass the last place.
        refused = await asyncio.to_thread(take, person)
        if refused is not None:
            raise FeedbackLimited(refused.text(self.limiter.clock()))

    async def check_reply(self, turn_id: int, where: ChatRef | None = None) -> None:
        """Raise ``UnknownReply`` unless ``turn_id`` is a reply of the bot (shown in ``where``, if given)."""
        turn = await asyncio.to_thread(self.store.get_turn, turn_id)
        if turn is None or turn.role is not Role.ASSISTANT:
            raise UnknownReply(f"turn {turn_id} is not one of my replies")
        if where is not None and (
            turn.chat is None or (turn.chat.platform, turn.chat.chat_id) != (where.platform, where.chat_id)
        ):
            log.warning(
                "refused feedback on reply %s from %s chat %s: the reply was shown elsewhere",
                turn_id,
                where.platform,
                where.chat_id,
            )
            raise UnknownReply(f"turn {turn_id} is not one of my replies in this chat")

    # --- corrections typed as the next message (Telegram's ✏️) ----------------------

    async def await_correction(self, chat: ChatRef, person: Person, turn_id: int) -> None:
        """Take the person's next message in ``chat`` as their better answer to ``turn_id``.

        Kept in the database: whichever process receives that message, even after a restart.
        """
        if self.pending is None:
            raise RuntimeError("this service was built without a PendingCorrections store")
        stale = datetime.now(UTC) - CORRECTION_WAIT
        await asyncio.to_thread(self.pending.expect, chat, person, turn_id, stale)

    async def awaited_correction(self, chat: ChatRef, person: Person) -> int | None:
        """The reply the person owes a better answer to in ``chat``, if they pressed ✏️ lately."""
        if self.pending is None:
            return None
        since = datetime.now(UTC) - CORRECTION_WAIT
        return await asyncio.to_thread(self.pending.awaited, chat, person, since)

    async def drop_awaited_correction(self, chat: ChatRef, person: Person) -> bool:
        """Stop waiting for the person's better answer in ``chat``; whether one was awaited."""
        if self.pending is None:
            return False
        since = datetime.now(UTC) - CORRECTION_WAIT
        return await asyncio.to_thread(self.pending.drop, chat, person, since)

    async def drop_awaited_corrections(self, person: Person) -> None:
        """Stop waiting for the person's better answers in every chat (/forget)."""
        if self.pending is not None:
            await asyncio.to_thread(self.pending.drop_person, person)

    # --- conversations and people -----------------------------------------------

    async def reset(self, chat: ChatRef, person: Person, shared_history: bool = False) -> bool:
        """Start a new conversation; the old one stays stored but is no longer in the prompt."""
        return await asyncio.to_thread(self.store.reset, chat, person, shared_history)

    async def forget(self, person: Person) -> ForgetReport:
        """Delete everything stored about a person: their turns, ratings and corrections,
        then their rows in every copy outside the database (exports, datasets, retrain runs).

        The report names the model versions already trained on their words. A
        request while one for the same person runs gets that one's report; one
        within ``ChatConfig.forget_cooldown_seconds`` of the last is refused
        (``ForgetReport.retry_after_s``); a person with nothing stored costs no sweep.
        """
        running = self._forgetting.get(person.actor)
        if running is None:
            running = asyncio.ensure_future(self._forget_once(person))
            self._forgetting[person.actor] = running
            running.add_done_callback(lambda _: self._forgetting.pop(person.actor, None))
        # Shielded: a person who gives up waiting does not stop a sweep halfway.
        return await asyncio.shield(running)

    async def _forget_once(self, person: Person) -> ForgetReport:
        wait = await self._forget_cooldown(person)
        if wait > 0:
            return ForgetReport(0, 0, 0, 0, retry_after_s=wait)
        picked = await self.again.forget(person)  # their 🔁 pairs: rows of theirs in the DPO copies
        report = await asyncio.to_thread(self.store.forget, person)
        report = replace(report, turn_ids=(*report.turn_ids, *picked)) if picked else report
        if not (report.turns or report.ratings or report.corrections or picked):
            # Nothing of theirs can be in a copy: a stranger's /forget must not cost a sweep.
            if report.known:
                await self._record(person.pseudonym, AuditAction.FORGET, None, {"turns": 0})
            return report
        self._forgot_at[person.actor] = time.time()
        if self.copies is not None:
            copies = await self._erase_copies(person, turn_ids=report.turn_ids)
            report = replace(report, copies=copies)
        await self._record(person.pseudonym, AuditAction.FORGET, None, _forget_details(report))
        return report

    async def _forget_cooldown(self, person: Person) -> float:
        """Seconds until the person may use /forget again: from the audit trail (every process), else memory."""
        cooldown = self.config.chat.forget_cooldown_seconds
        now = time.time()  # wall time, as the audit trail keeps it
        last = self._forgot_at.get(person.actor, float("-inf"))
        if cooldown > 0 and self.audit is not None:
            since = datetime.fromtimestamp(now - cooldown, UTC)
            try:
                entries = await asyncio.to_thread(self.audit.audit_entries, since)
            except Exception:
                log.exception("could not read the audit trail for the /forget cooldown")
                entries = []
            swept = [
                e.at.timestamp()
                for e in entries
                if e.action is AuditAction.FORGET and e.actor == person.pseudonym and e.details.get("turns")
            ]
            last = max([last, *swept])
        return max(0.0, last + cooldown - now)

    async def _erase_copies(
        self, person: Person | None, turn_ids: Sequence[int] = (), conversation_ids: Sequence[int] = ()
    ) -> ErasedCopies:
        """Take rows out of the copies outside the database, one sweep at a time; a failure is reported."""
        assert self.copies is not None
        async with self._sweeping:
            try:
                return await asyncio.to_thread(self.copies.erase, person, turn_ids, conversation_ids)
            except Exception:
                log.exception("could not remove rows from the copies outside the database")
                return ErasedCopies(unreachable=("the training data folders",))

    async def set_voice(self, person: Person, on: bool | None) -> bool:
        """Record ``/voice on|off`` (None: back to the deployment's mode); False when speech is not set up."""
        if self.speaker is None:
            return False
        await self.speaker.set_preference(person, on)
        return True

    async def set_consent(self, person: Person, consent: bool) -> None:
        """Record whether the person's conversations may be used to train future versions."""
        await asyncio.to_thread(self.store.set_consent, person, consent)
        await self._record(person.actor, AuditAction.CONSENT, person.actor, {"consent": consent})

    async def prune(self, dry_run: bool = False, actor: str = "retention") -> PruneReport | None:
        """Apply the retention period (``ChatConfig.retention_days``) now; None when there is none."""
        days = self.config.chat.retention_days
        if days <= 0:
            return None
        cutoff = retention_cutoff(self.limiter.clock(), days)
        report = await asyncio.to_thread(self.store.prune, cutoff, dry_run)
        if dry_run:
            return report
        if self.copies is not None and report.conversation_ids:
            copies = await self._erase_copies(None, conversation_ids=report.conversation_ids)
            report = replace(report, copies=copies)
        await self._record(actor, AuditAction.PRUNE, None, prune_details(report, days))
        return report

    async def keep_pruning(self, interval_s: float = 24 * 3600) -> None:
        """Apply retention now and then every ``interval_s`` until cancelled (the running bots' daily prune)."""
        while True:
            try:
                report = await self.prune()
                if report is not None:
                    log.info(
                        "retention: deleted %s conversations (%s turns), kept %s for training, %s people",
                        report.conversations,
                        report.turns,
                        report.kept_for_training,
                        report.people,
                    )
            except Exception:
                log.exception("retention could not be applied; trying again in %s s", interval_s)
            await asyncio.sleep(interval_s)

    # --- admin --------------------------------------------------------------------

    async def stats(self) -> Stats:
        return await asyncio.to_thread(self.store.stats)

    async def ab_status(self) -> ABReport | None:
        """The running A/B test's figures, or else the last one's; None when there never was one."""
        if self.ab is None:
            return None
        return await asyncio.to_thread(latest_report, self.ab.experiments)

    async def pending_corrections(self) -> list[Correction]:
        return await asyncio.to_thread(self.store.corrections, CorrectionStatus.PENDING)

    async def review(
        self, correction_id: int, approve: bool, reviewer: str, text: str | None = None
    ) -> Correction:
        """Approve (optionally with edited text) or reject a pending correction; the trail records it."""
        decided = await asyncio.to_thread(self.store.review_correction, correction_id, approve, reviewer, text)
        await self._record(reviewer, *review_entry(decided, edited=approve and bool((text or "").strip())))
        await self._remember(decided, reviewer)
        return decided

    async def _remember(self, correction: Correction, actor: str) -> None:
        """The memory follows a review at once: approved (or edited) indexed anew, rejected dropped."""
        if self.memory is None:
            return
        try:
            change = await asyncio.to_thread(self.memory.learn, correction)
        except Exception:
            # Stored approved all the same; the next start indexes it (CorrectionMemory.sync).
            log.exception("could not index correction %s in the memory", correction.id)
            return
        if (entry := memory_entry(correction, change)) is not None:
            await self._record(actor, *entry)

    async def retrain(self, profile: str | None = None, actor: str = "unknown") -> RetrainOutcome:
        """Run a retrain in its own process; the bots keep answering meanwhile.

        A promoted model is picked up by the generator between replies. The
        trail records who started it, how it ended and what it promoted.
        """
        if self.retrainer is None:
            return RetrainOutcome(False, False, None, "Retraining is not set up on this deployment.")
        if self._retraining.locked():
            raise RetrainBusy("a retrain is already running")
        async with self._retraining:
            await self._record(actor, AuditAction.RETRAIN_START, profile, {"profile": profile})
            try:
                outcome = await asyncio.to_thread(self.retrainer.retrain, profile)
            except Exception as error:
                await self._record(
                    actor, AuditAction.RETRAIN_OUTCOME, profile, {"ok": False, "error": type(error).__name__}
                )
                raise
            for action, target, details in retrain_entries(outcome):
                await self._record(actor, action, target, details)
            return outcome

    async def audit_trail(self, since: datetime | None = None) -> list[AuditEntry]:
        """The audit trail, oldest first (admins only: adapters check before they call)."""
        if self.audit is None:
            return []
        return await asyncio.to_thread(self.audit.audit_entries, since)

    async def _record(
        self, actor: str, action: AuditAction, target: str | None, details: dict[str, object]
    ) -> None:
        if self.audit is None:
            return
        try:
            await asyncio.to_thread(self.audit.record_audit, actor, action, target, details)
        except Exception:
            log.exception("could not write %s by %s to the audit trail", action.value, actor)


def _forget_details(report: ForgetReport) -> dict[str, object]:
    """The audit entry of a /forget: what was deleted, and from which files outside the database."""
    details: dict[str, object] = {
        "turns": report.turns,
        "ratings": report.ratings,
        "corrections": report.corrections,
    }
    if report.copies is not None:
        details |= {
            "files": report.copies.files,
            "rows": report.copies.rows,
            "removed": dict(report.copies.removed),
            "models": list(report.copies.models),
            "unreachable": list(report.copies.unreachable),
            "unchecked": list(report.copies.unchecked),
        }
    return details


# Why a recovered turn has no reply, until it has one (kept if the recovering process stops too).
INTERRUPTED = "A restart interrupted this message before it was answered."
LOST_IN_RESTART = "Your voice message was lost in a restart before I could listen to it; please send it again."


def _too_many_waiting(count: int) -> str:
    earlier = "your last message" if count == 1 else f"your last {count} messages"
    return f"I am still answering {earlier}; please wait for the answer, then send this one again."


@dataclass(frozen=True)
class _Heard:
    text: str
    seconds: float
    ms: float


@dataclass(frozen=True)
class _Written:
    model: str
    generate_ms: float
    tokens: int
