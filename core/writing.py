"""The model's side of a reply: which model answers, what the memory knows, a place in line, the text.

``ReplyWriter`` holds what writing needs (the generator, the A/B serving, the correction
memory, the model's places); ``core.replies`` gives it each stored, heard turn,
and 🔁 (``core.choices``) writes its second answers through the same places.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from core.ab import ABServing, Choice
from core.chat_settings import ChatSettings, ChatSettingsBook
from core.config import ServiceConfig
from core.domain import (
    Notice,
    NoticeKind,
    Person,
    ReplyDone,
    ServiceEvent,
    Timings,
    Turn,
    UserTurnReceipt,
)
from core.drafting import Draft, Stalled, fill, follow
from core.i18n import _
from core.languages import Languages, asked, with_language
from core.memory import CorrectionMemory, MemoryMode, Recall, grounding
from core.personas import Persona, PersonaBook
from core.ports import ConversationStore, ReplyGenerator, ServerUnavailable
from core.prompt import PromptTooLong, build_prompt
from core.scheduling import FairQueue

log = logging.getLogger(__name__)


class ReplyWriter:
    """Writes each reply with the model (or the memory) and stores it."""

    def __init__(
        self,
        store: ConversationStore,
        generator: ReplyGenerator,
        config: ServiceConfig,
        ab: ABServing | None = None,
        memory: CorrectionMemory | None = None,
        personas: PersonaBook | None = None,
        chat_settings: ChatSettingsBook | None = None,
    ) -> None:
        self.store = store
        self.generator = generator
        self.config = config
        self.ab = ab  # A/B tests of model versions; None: the active version answers everyone
        # Approved corrections answer the questions they fix before any retrain (core.memory); None: off.
        self.memory = memory
        # Whose prompt writes each reply, read at each reply (core.personas); None: the configured prompt.
        self.personas = personas or PersonaBook(None, config.chat.system_prompt)
        # Each chat's reply length and earlier turns, read at each reply (core.chat_settings).
        self.chat_settings = chat_settings or ChatSettingsBook(None)
        self.queue = FairQueue(config.parallel_replies)  # the model's places, round-robin per person
        # Each reply's language detected and stored (core.languages); set by ``ChatService``. None: not.
        self.languages: Languages | None = None

    @property
    def waiting(self) -> int:
        """How many replies wait for a place at the model."""
        return self.queue.waiting

    async def reply(
        self,
        receipt: UserTurnReceipt,
        sender: Person,
        user_text: str,
        started: float,
        transcribe_ms: float | None,
        settings: ChatSettings | None = None,
        language: str | None = None,
        chosen: tuple[Choice, Persona] | None = None,
    ) -> AsyncGenerator[ServiceEvent, None]:
        """Write the reply to a stored turn, showing it as it grows, then store it; never raises.

        ``settings``: the chat's, when the caller read them already; None: read here.
        ``language``: the one the reply is asked in (core.languages); None: no line asks for one.
        ``chosen``: the model and persona that write it (``who_answers``), when the caller read them
        already (its voice must be the same persona's); None: read here.
        """
        turn_id = receipt.turn_id
        if settings is None:
            settings = await self.chat_settings.for_conversation(receipt.conversation_id)
        turns = settings.history(self.config.chat.history_turns)  # 0: the chat wants no earlier turns
        try:
            read = self.store.history
            history = await asyncio.to_thread(read, receipt.conversation_id, turn_id, turns) if turns else []
        except Exception:
            log.exception("could not read the history of turn %s", turn_id)
            history = []
        choice, persona = chosen or await self.who_answers(receipt.conversation_id)
        recall = await self._recall(user_text, choice.generator.model_name)
        # The model writes in a task of its own: it never waits for the chat to
        # show what it wrote (a flood wait or a slow network in one chat must not
        # hold the model for every other chat); the chat shows the latest text.
        draft = Draft()
        writer = asyncio.create_task(
            self._write(
                sender, history, user_text, draft, choice.generator, recall, persona, settings, language
            )
        )
        try:
            async for event in follow(draft, self.config.chat.queue_notice_seconds):
                yield event
            written = await writer
        except PromptTooLong:
            too_long = _("That message is too long for me to answer in one go; please shorten it.")
            yield await self.fail(turn_id, too_long, NoticeKind.TOO_LONG)
            return
        except ServerUnavailable as down:
            log.warning("turn %s not answered: %s", turn_id, down)
            yield await self.fail(
                turn_id, _("I cannot answer right now ({why}). Please try again in a minute.").format(why=down)
            )
            return
        except Stalled as stalled:
            log.error("turn %s not answered: %s", turn_id, stalled)
            yield await self.fail(
                turn_id, _("Sorry, the model stopped answering me. Please try again in a minute.")
            )
            return
        except Exception:
            log.exception("generation failed for turn %s", turn_id)
            yield await self.fail(
                turn_id, _("Sorry, I could not come up with a reply just now. Please try again.")
            )
            return
        finally:
            if not writer.done():  # the adapter stopped listening: stop the model too
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        text = draft.text.strip()
        memory = (recall.correction_id, recall.mode.value) if recall else None
        if not text:
            yield await self.fail(turn_id, _("Sorry, I had nothing to say to that. Try asking another way."))
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
                persona.recorded,
            )
        except Exception:
            log.exception("could not store the reply to turn %s", turn_id)
            yield Notice(
                NoticeKind.STORE_FAILED,
                _("I answered, but could not save the answer, so it cannot be rated."),
                turn_id,
            )
            return
        detected = None
        if self.languages is not None:  # stored before it is shown: what `iris ask --json` reads back
            detected = await self.languages.detect(text)
            await self.languages.record(reply_id, detected, language)
        said_in = asked(None, detected)  # the reply's language, when sure: its voice note's (core.speaking)
        yield ReplyDone(reply_id, text, written.model, timings, memory, persona.name, said_in)

    async def fail(self, turn_id: int, reason: str, kind: NoticeKind = NoticeKind.MODEL_FAILED) -> Notice:
        """Store why the turn got no reply; the notice that tells the person."""
        await mark_failed(self.store, turn_id, reason)
        return Notice(kind, reason, turn_id)

    async def choose_model(self, conversation_id: int) -> Choice:
        """The model that answers: the active one, or an A/B test's arm for this conversation
        (in a test of personas, the arm's persona too)."""
        if self.ab is None:
            return Choice(self.generator)
        try:
            return await asyncio.to_thread(self.ab.choose, conversation_id, self.generator, self.personas)
        except Exception:
            log.exception("could not read the running experiment; the active model answers")
            return Choice(self.generator)

    async def who_answers(self, conversation_id: int) -> tuple[Choice, Persona]:
        """The model and the persona that write the conversation's next reply, read once."""
        choice = await self.choose_model(conversation_id)
        return choice, await self.persona_of(conversation_id, choice)

    async def persona_of(self, conversation_id: int, choice: Choice | None = None) -> Persona:
        """The persona that writes the conversation's next reply: its arm's in an A/B test of personas
        (``choice``'s, else looked up), else its chat's (a failing lookup: the configured prompt)."""
        if choice is None and self.ab is not None:
            choice = await self.choose_model(conversation_id)
        if choice is not None and choice.persona is not None:
            return choice.persona
        try:
            return await asyncio.to_thread(self.personas.for_conversation, conversation_id)
        except Exception:
            log.exception(
                "could not read the persona of conversation %s; the configured prompt answers", conversation_id
            )
            return self.personas.configured

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
        persona: Persona | None = None,
        settings: ChatSettings | None = None,
        language: str | None = None,
    ) -> _Written:
        """Wait for a place at the model, then write the whole reply into ``draft``.

        Places go round-robin per person: in a busy group, one person's many
        notes do not make everyone else wait behind all of them. Both arms of
        an A/B test share the places. A reply served from the correction memory
        needs no place: the approved answer is the reply.
        """
        persona = persona or self.personas.configured
        # The chat's reply length: a token limit and a line in the prompt (core.chat_settings).
        system_prompt, options = (settings or ChatSettings()).shape(
            persona.prompt, persona.options(self.config.generation), generator.context_tokens
        )
        system_prompt = with_language(system_prompt, language)  # a line asking for the person's language
        try:
            if recall is not None and recall.mode is MemoryMode.SERVED:
                draft.add(recall.answer)
                tokens = await asyncio.to_thread(generator.count_tokens, recall.answer)
                return _Written(generator.model_name, 0.0, tokens)
            if recall is not None:
                system_prompt = grounding(recall, system_prompt)
            async with self.queue.slot(sender.actor, on_place=draft.queued):
                draft.queued(None)
                budget = generator.context_tokens - options.max_tokens
                messages = await asyncio.to_thread(
                    build_prompt, system_prompt, history, user_text, generator.count_tokens, budget
                )
                began = time.perf_counter()
                await fill(draft, generator.stream(messages, options), self.config.chat.stall_seconds)
                generate_ms = (time.perf_counter() - began) * 1000
                model = generator.model_name
            tokens = await asyncio.to_thread(generator.count_tokens, draft.text)
            return _Written(model, generate_ms, tokens)
        finally:
            draft.finish()


async def mark_failed(
    store: ConversationStore, turn_id: int, reason: str, audio_seconds: float | None = None
) -> None:
    """Store why a turn got no reply (best effort: the person is told either way)."""
    try:
        await asyncio.to_thread(store.mark_failed, turn_id, reason, audio_seconds)
    except Exception:
        log.exception("could not note why turn %s failed", turn_id)


@dataclass(frozen=True)
class _Written:
    model: str
    generate_ms: float
    tokens: int
