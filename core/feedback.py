"""What people say about replies: 👍/👎, better answers, and the admins' review of them.

A 👎 on a reply the correction memory served tells the memory that question is not one
its correction answers; an approved correction is indexed in the memory at once, a
rejected one dropped. Presses and corrections in a chat count against the person's
hourly limits, across processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from core.ab import ABServing, decide_if_due
from core.audit import AuditTrail, memory_entry, review_entry
from core.domain import ChatRef, Correction, CorrectionStatus, Person, RatingOutcome, Role
from core.limits import RateLimiter, Refused
from core.memory import CorrectionMemory
from core.ports import ConversationStore, PendingCorrections

log = logging.getLogger(__name__)

# How long after ✏️ the person's next message is taken as their better answer; later it is a
# question again (a ✏️ forgotten for days must not swallow one).
CORRECTION_WAIT = timedelta(hours=24)


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


class Feedback:
    """Ratings, corrections and their review; holds the limits on presses and the ✏️ waits."""

    def __init__(
        self,
        store: ConversationStore,
        limiter: RateLimiter,
        trail: AuditTrail,
        ab: ABServing | None = None,
        memory: CorrectionMemory | None = None,
        pending: PendingCorrections | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.trail = trail
        self.ab = ab
        self.memory = memory
        # Who owes a better answer after ✏️ (Telegram). None: nothing is awaited and
        # await_correction refuses (a service a test builds for messages alone).
        self.pending = pending

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
            await self.take(self.limiter.take_press, person)
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
            await asyncio.to_thread(decide_if_due, self.ab.experiments, self.ab.registry, self.trail.store)
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
            await self.take(self.limiter.take_correction, person)
        await self.check_reply(turn_id, where)
        return await asyncio.to_thread(self.store.add_correction, person, turn_id, text)

    async def take(self, take: Callable[[Person], Refused | None], person: Person) -> None:
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

    async def pending_corrections(self) -> list[Correction]:
        return await asyncio.to_thread(self.store.corrections, CorrectionStatus.PENDING)

    async def pending_correction(self, correction_id: int) -> Correction | None:
        """The correction if it still waits for review, else None."""
        found = await asyncio.to_thread(self.store.correction, correction_id)
        return found if found is not None and found.status is CorrectionStatus.PENDING else None

    async def review(
        self,
        correction_id: int,
        approve: bool,
        reviewer: str,
        text: str | None = None,
        pending_only: bool = False,
    ) -> Correction:
        """Approve (optionally with edited text) or reject a correction; the trail records it.

        ``LookupError`` when there is none; with ``pending_only`` (a press in a chat, where two
        admins may press at once) ``AlreadyReviewed`` when it was decided already.
        """
        decide = self.store.review_correction
        decided = await asyncio.to_thread(decide, correction_id, approve, reviewer, text, pending_only)
        await self.trail.record(reviewer, *review_entry(decided, edited=approve and bool((text or "").strip())))
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
            await self.trail.record(actor, *entry)
