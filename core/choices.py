"""🔁 another answer: a second sample of a reply, shown beside it, and the person's pick (a DPO pair).

The press is answered at once: ``AnotherAnswer.ask`` checks, counts and claims in the
database, then hands back a task that writes the second answer through the same model
queue and generator as replies (the conversation's model, or the active one if that one
is gone), sampled (temperature > 0, a fresh seed). One second answer per reply, whoever
presses: the claim is a row, so two processes cannot both write one. A claim left by a
process killed mid-answer goes stale after ``STALE`` and the next 🔁 writes it again.

Only the person who pressed 🔁 may choose; the choice can change until an export has
used it (``finetune.feedback`` marks it exported), and "neither" exports nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from core.domain import ChatRef, Person, Turn
from core.i18n import N_, _
from core.languages import asked, with_language
from core.prompt import build_prompt

if TYPE_CHECKING:
    from core.feedback import Feedback
    from core.writing import ReplyWriter

log = logging.getLogger(__name__)

# A claim older than this with no second answer is taken as lost with a stopped process.
STALE = timedelta(minutes=3)
TEMPERATURE = 0.8  # the second answer's, unless replies are already sampled hotter

ALREADY = N_("There is already a second answer above.")
WRITING = N_("I am already writing a second answer to that reply.")
SAME = N_("Both answers came out the same, so there is nothing to choose. Press 🔁 to try again.")
FAILED = N_("Sorry, I could not write another answer just now. Please try again.")
NOTHING = N_("Sorry, I had nothing more to say to that.")
NOT_YOURS = N_("Only the person who asked for another answer can choose.")
UNKNOWN = N_("That choice is no longer stored.")
FROZEN = N_("Your choice was already used for training data; it can no longer be changed.")
NOT_SET_UP = N_("Another answer is not set up on this bot.")
QUESTION_GONE = N_("The question behind that reply is no longer stored.")


class Pick(StrEnum):
    FIRST = "first"
    SECOND = "second"
    NEITHER = "neither"


PICKED = {
    Pick.FIRST: N_("Thanks! You chose answer 1."),
    Pick.SECOND: N_("Thanks! You chose answer 2."),
    Pick.NEITHER: N_("Thanks! Noted that neither answer is better."),
}


@dataclass(frozen=True)
class AnswerPair:
    """A reply (``first``), the second answer written for it, and the pick of who asked for it."""

    id: int
    turn_id: int  # the reply shown first
    person: Person  # who pressed 🔁: the only one who may pick
    first: str
    second: str | None  # None while it is written (or lost with a stopped process)
    model_version: str | None
    pick: Pick | None
    started_at: datetime  # when the second answer was claimed: whose writing may store it
    exported: bool = False
    chat: ChatRef | None = None  # where the reply was shown


@dataclass(frozen=True)
class Question:
    """What a reply answered: its conversation, the person's turn and its text."""

    conversation_id: int
    turn_id: int
    text: str


class AnswerChoices(Protocol):
    """The pairs in the database (``storage.choices``); every method blocks."""

    def pair_of(self, turn_id: int) -> AnswerPair | None: ...

    def pair(self, pair_id: int) -> AnswerPair | None: ...

    def question(self, reply_id: int) -> Question | None: ...

    def start(self, turn_id: int, person: Person, stale: datetime) -> AnswerPair | None:
        """Claim the second answer of ``turn_id`` for ``person``; None when someone holds a claim
        newer than ``stale`` or a second answer exists."""
        ...

    def finish(self, pair: AnswerPair, text: str, model_version: str) -> bool:
        """Store the second answer; False when the claim was taken over meanwhile."""
        ...

    def drop(self, pair: AnswerPair) -> None:
        """Give up the claim (nothing was written), so a later 🔁 may try again."""
        ...

    def decide(self, pair_id: int, pick: Pick) -> bool:
        """Record the pick; False when an export already used the pair."""
        ...

    def forget(self, person: Person) -> list[int]:
        """Delete the person's pairs; the reply turn ids they were written for."""
        ...


class AgainRefused(Exception):
    """A 🔁 or a pick that is not acted on; ``str(error)`` is what to tell the person."""


class AnotherAnswer:
    """The service's 🔁 (``ChatService.again``): asking for a second answer, and picking one."""

    def __init__(self, writer: ReplyWriter, feedback: Feedback, choices: AnswerChoices | None) -> None:
        self.writer = writer  # the second answer goes through the replies' model places
        self.feedback = feedback  # which replies may be pressed, and the limits on presses
        self.choices = choices
        self._writing: dict[int, asyncio.Task[AnswerPair]] = {}  # by reply turn id, in this process

    def _store(self) -> AnswerChoices:
        if self.choices is None:
            raise AgainRefused(_(NOT_SET_UP))
        return self.choices

    async def ask(self, person: Person, turn_id: int, where: ChatRef | None = None) -> asyncio.Task[AnswerPair]:
        """Check, count and claim a second answer to reply ``turn_id``; the task writes it.

        Quick (database work only). Raises ``UnknownReply`` for a reply not shown in ``where``,
        ``FeedbackLimited`` past ``RateLimits.again_per_hour`` (only presses in a chat count) and
        ``AgainRefused`` when a second answer exists or is being written. The task's result is
        the pair with both answers; it raises ``AgainRefused`` when no pair came of it.
        """
        choices = self._store()
        await self.feedback.check_reply(turn_id, where)
        if turn_id in self._writing:
            raise AgainRefused(_(WRITING))
        stale = datetime.now(UTC) - STALE
        existing = await asyncio.to_thread(choices.pair_of, turn_id)
        if existing is not None and (existing.second is not None or existing.started_at > stale):
            raise AgainRefused(_(ALREADY if existing.second is not None else WRITING))
        question = await asyncio.to_thread(choices.question, turn_id)
        if question is None:
            raise AgainRefused(_(QUESTION_GONE))
        if where is not None:
            await self.feedback.take(self.feedback.limiter.take_again, person)
        pair = await asyncio.to_thread(choices.start, turn_id, person, stale)
        if pair is None:  # another press (another process) claimed it a moment ago
            raise AgainRefused(_(WRITING))
        task = asyncio.ensure_future(self._write(choices, pair, question))
        self._writing[turn_id] = task
        task.add_done_callback(lambda _: self._writing.pop(turn_id, None))
        return task

    async def _write(self, choices: AnswerChoices, pair: AnswerPair, question: Question) -> AnswerPair:
        try:
            text, model = await self._sample(pair.person, question)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(choices.drop, pair))
            raise
        except Exception:
            log.exception("could not write a second answer to reply %s", pair.turn_id)
            await asyncio.to_thread(choices.drop, pair)
            raise AgainRefused(_(FAILED)) from None
        if not text:
            await asyncio.to_thread(choices.drop, pair)
            raise AgainRefused(_(NOTHING))
        if _same(text, pair.first):  # nothing to learn from: no pair is kept, a new 🔁 may try again
            await asyncio.to_thread(choices.drop, pair)
            raise AgainRefused(_(SAME))
        if not await asyncio.to_thread(choices.finish, pair, text, model):
            raise AgainRefused(_(ALREADY))
        return replace(pair, second=text, model_version=model)

    async def _sample(self, person: Person, question: Question) -> tuple[str, str]:
        """The second answer: the reply's history and question, sampled, through the model queue."""
        writer = self.writer
        chat = writer.config.chat
        history: Sequence[Turn] = await asyncio.to_thread(
            writer.store.history, question.conversation_id, question.turn_id, chat.history_turns
        )
        generator = (await writer.choose_model(question.conversation_id)).generator
        persona = await writer.persona_of(question.conversation_id)  # the chat's persona, as replies
        options = persona.options(writer.config.generation)
        options = replace(options, temperature=max(options.temperature, TEMPERATURE), seed=secrets.randbits(31))
        prompt = persona.prompt
        if writer.languages is not None:  # asked in the language the first answer was (core.languages)
            languages = writer.languages
            language = asked(await languages.preference(person), await languages.detect(question.text))
            prompt = with_language(prompt, language)
        text = ""
        async with writer.queue.slot(person.actor):
            budget = generator.context_tokens - options.max_tokens
            messages = await asyncio.to_thread(
                build_prompt, prompt, history, question.text, generator.count_tokens, budget
            )
            async with aclosing(generator.stream(messages, options)) as pieces:
                async for piece in pieces:
                    text += piece
            return text.strip(), generator.model_name

    async def choose(self, person: Person, pair_id: int, pick: Pick, where: ChatRef | None = None) -> str:
        """Record ``person``'s pick on pair ``pair_id``; the sentence that acknowledges it.

        ``AgainRefused`` for a pair that is unknown, unfinished, shown in another chat than
        ``where`` or asked for by someone else, or already exported.
        """
        choices = self._store()
        if where is not None:  # counted as a 👍/👎 press is: forged and repeated ones too
            await self.feedback.take(self.feedback.limiter.take_press, person)
        pair = await asyncio.to_thread(choices.pair, pair_id)
        if pair is None or pair.second is None:
            raise AgainRefused(_(UNKNOWN))
        if where is not None and (pair.chat is None or pair.chat.chat_id != where.chat_id):
            raise AgainRefused(_(UNKNOWN))  # a forged id from another chat reveals nothing
        if (pair.person.platform, pair.person.user_id) != (person.platform, person.user_id):
            raise AgainRefused(_(NOT_YOURS))
        if pair.exported:
            if pair.pick is pick:
                return _(PICKED[pick])
            raise AgainRefused(_(FROZEN))
        if not await asyncio.to_thread(choices.decide, pair_id, pick):
            raise AgainRefused(_(FROZEN))
        return _(PICKED[pick])

    async def forget(self, person: Person) -> list[int]:
        """Delete the person's pairs (/forget); the reply ids whose copies hold them."""
        if self.choices is None:
            return []
        return await asyncio.to_thread(self.choices.forget, person)


def parse_pick(word: str) -> Pick | None:
    """``1``, ``2`` or ``n`` (the console's and the buttons' words) as a pick."""
    return {"1": Pick.FIRST, "2": Pick.SECOND, "n": Pick.NEITHER}.get(word.strip().lower())


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()
