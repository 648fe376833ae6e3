"""Presses on 👍 / 👎 / ✏️ under a reply, and /cancel for a correction not given."""

from __future__ import annotations

from html import escape

from telegram import CallbackQuery, ForceReply, Message, Update
from telegram.ext import ContextTypes

from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.admin import ALREADY_DECIDED, REVIEWERS_ONLY, SUGGESTION_GONE
from bots.telegram_bot.buttons import ForgedPress, parse_fix, parse_forged, parse_rate, rating_keyboard
from bots.telegram_bot.formatting import Rendered, plain_text
from bots.telegram_bot.incoming import PLATFORM, chat_of, person_of
from bots.telegram_bot.outbox import Target
from core.choices import UNKNOWN as PAIR_GONE
from core.domain import ChatRef, RatingOutcome
from core.feedback import FeedbackLimited, UnknownReply
from core.i18n import N_, _

REPLY_GONE = N_("That reply is no longer stored.")
UNKNOWN_BUTTON = N_("That button no longer works.")
ASK_FIX = N_("what should I have said? Send the better answer as your next message, or /cancel.")


def _rating_ack(outcome: RatingOutcome, up: bool) -> str:
    emoji = "👍" if up else "👎"
    return {
        RatingOutcome.CREATED: _("Thanks for the {emoji}!"),
        RatingOutcome.CHANGED: _("Changed your rating to {emoji}."),
        RatingOutcome.UNCHANGED: _("You already gave this reply a {emoji}."),
    }[outcome].format(emoji=emoji)


def _where(query: CallbackQuery) -> tuple[int, int] | None:
    """The chat and message the pressed button sits under.

    Telegram fills these in from the message itself; only the callback data
    comes from the client, so these (not the data) say where the press happened.
    """
    if query.message is None:
        return None
    return query.message.chat.id, query.message.message_id


def _chat(where: tuple[int, int]) -> ChatRef:
    return ChatRef(PLATFORM, str(where[0]))


class Feedback:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def on_rate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Store the rating, acknowledge it, and mark the chosen button."""
        query = update.callback_query
        press = parse_rate(query.data or "") if query else None
        if query is None or press is None or not await self.adapter.admitted(update):
            return
        outbox = self.adapter.outbox
        where = _where(query)
        if where is None:
            await outbox.answer(query.id, _(REPLY_GONE))
            return
        try:
            outcome = await self.adapter.service.feedback.rate(
                person_of(query.from_user), press.turn_id, press.up, _chat(where)
            )
        except UnknownReply:
            await outbox.answer(query.id, _(REPLY_GONE))
            return
        except FeedbackLimited as limited:
            await outbox.answer(query.id, str(limited))
            return
        await outbox.answer(query.id, _rating_ack(outcome, press.up))
        if outcome is not RatingOutcome.UNCHANGED:
            await outbox.edit_buttons(*where, rating_keyboard(press.turn_id, chosen=press.up))

    async def on_fix(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Ask for the better answer; the person's next message in this chat is taken as it."""
        query = update.callback_query
        press = parse_fix(query.data or "") if query else None
        if query is None or press is None or not await self.adapter.admitted(update):
            return
        where = _where(query)
        try:
            if where is None:
                raise UnknownReply("the button's message is not available")
            await self.adapter.service.feedback.check_reply(press.turn_id, _chat(where))
        except UnknownReply:
            await self.adapter.outbox.answer(query.id, _(REPLY_GONE))
            return
        user = query.from_user
        await self.adapter.service.feedback.await_correction(_chat(where), person_of(user), press.turn_id)
        await self.adapter.outbox.answer(query.id, _("Send me the better answer."))
        message = query.message
        thread = (
            message.message_thread_id if isinstance(message, Message) and message.is_topic_message else None
        )
        mention = Rendered(
            f'<a href="tg://user?id={user.id}">{escape(user.first_name, quote=False)}</a>, {_(ASK_FIX)}',
            f"{user.first_name}, {_(ASK_FIX)}",
        )
        # ForceReply makes the answer a reply to the bot, so it arrives even with group privacy mode on.
        force = ForceReply(selective=True, input_field_placeholder=_("A better answer…"))
        await self.adapter.outbox.send(Target(where[0], thread, where[1]), mention, force)

    async def on_unknown_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A press whose data no button of Iris carries (an old version's, or a modified client's).

        Answered, so the person's client stops waiting; nothing is stored. An Iris button's
        data with a forged id too long for the database gets what a deleted one gets.
        """
        query = update.callback_query
        if query is None:
            return
        forged = parse_forged(query.data or "")
        if forged is None:
            await self.adapter.outbox.answer(query.id, _(UNKNOWN_BUTTON))
        else:
            await self._on_forged(update, query, forged)

    async def _on_forged(self, update: Update, query: CallbackQuery, forged: ForgedPress) -> None:
        """The answer a press on a deleted reply, pair or suggestion gets, after the same checks."""
        outbox = self.adapter.outbox
        if forged.kind in ("review", "edit"):
            if not self.adapter.is_admin(update):
                await outbox.answer(query.id, _(REVIEWERS_ONLY), alert=True)
            elif forged.kind == "edit":
                await outbox.answer(query.id, _(ALREADY_DECIDED).format(id=forged.forged_id))
            else:
                await outbox.answer(query.id, _(SUGGESTION_GONE))
        elif await self.adapter.admitted(update):
            await outbox.answer(query.id, _(PAIR_GONE) if forged.kind == "pick" else _(REPLY_GONE))

    async def on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        dropped = await self.adapter.service.feedback.drop_awaited_correction(chat_of(message), person_of(user))
        text = _("Cancelled; nothing was stored.") if dropped else _("There is nothing to cancel.")
        await self.adapter.outbox.send(self.adapter.target(message), plain_text(text))
