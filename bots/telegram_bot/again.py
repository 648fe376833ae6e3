"""🔁 under a reply: another answer, shown beside the first, and the 1 / 2 / Neither pick (``core.choices``).

The press is answered at once; the second answer is written in a task of the adapter's
own, so the press (an urgent inbox update) never holds a place while the model writes.
"""

from __future__ import annotations

import asyncio
import logging
from html import escape

from telegram import CallbackQuery, Message, Update
from telegram.constants import MessageLimit
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bots.render import choice_card
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.buttons import choice_keyboard, parse_again, parse_pick_press
from bots.telegram_bot.feedback import REPLY_GONE
from bots.telegram_bot.formatting import Rendered, plain_text
from bots.telegram_bot.incoming import PLATFORM, person_of
from bots.telegram_bot.outbox import Target
from core.choices import FAILED, AgainRefused, AnswerPair
from core.domain import ChatRef
from core.feedback import FeedbackLimited, UnknownReply
from core.i18n import N_, _

log = logging.getLogger(__name__)

WRITING = N_("Writing another answer…")


def choice_text(pair: AnswerPair) -> Rendered:
    """The pair as one Telegram message: HTML-escaped, and plain for a refused markup."""
    assert pair.second is not None
    limit = MessageLimit.MAX_TEXT_LENGTH
    return Rendered(
        choice_card(pair.first, pair.second, limit, lambda text: escape(text, quote=False)),
        choice_card(pair.first, pair.second, limit),
    )


def _where(query: CallbackQuery) -> Target | None:
    """Where the pressed button sits (as Telegram says, not the data): its chat, topic and message."""
    message = query.message
    if not isinstance(message, Message):
        return None
    thread = message.message_thread_id if message.is_topic_message else None
    return Target(message.chat.id, thread, message.message_id)


class Again:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self._showing: set[asyncio.Task[None]] = set()  # kept, so none is collected half-way

    async def on_again(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Claim a second answer and say so at once; the pair follows when it is written."""
        query = update.callback_query
        press = parse_again(query.data or "") if query else None
        if query is None or press is None or not await self.adapter.admitted(update):
            return
        outbox, target = self.adapter.outbox, _where(query)
        try:
            if target is None:
                raise UnknownReply("the button's message is not available")
            chat = ChatRef(PLATFORM, str(target.chat_id))
            writing = await self.adapter.service.again.ask(person_of(query.from_user), press.turn_id, chat)
        except UnknownReply:
            await outbox.answer(query.id, REPLY_GONE)
            return
        except (FeedbackLimited, AgainRefused) as refused:
            await outbox.answer(query.id, str(refused))
            return
        await outbox.answer(query.id, _(WRITING))
        task = asyncio.create_task(self._show(writing, target))
        self._showing.add(task)
        task.add_done_callback(self._showing.discard)

    async def _show(self, writing: asyncio.Task[AnswerPair], target: Target) -> None:
        outbox = self.adapter.outbox
        try:
            try:
                pair = await writing
            except AgainRefused as refused:
                await outbox.send(target, plain_text(str(refused)))
                return
            except Exception:
                log.exception("the second answer failed")
                await outbox.send(target, plain_text(_(FAILED)))
                return
            await outbox.send(target, choice_text(pair), choice_keyboard(pair.id))
        except TelegramError as error:
            log.warning("could not show a second answer: %s", error)

    async def on_pick(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """1 / 2 / Neither: only who asked for the second answer may pick; the pick is marked."""
        query = update.callback_query
        press = parse_pick_press(query.data or "") if query else None
        if query is None or press is None or not await self.adapter.admitted(update):
            return
        outbox, target = self.adapter.outbox, _where(query)
        try:
            if target is None:
                raise AgainRefused(REPLY_GONE)
            chat = ChatRef(PLATFORM, str(target.chat_id))
            said = await self.adapter.service.again.choose(
                person_of(query.from_user), press.pair_id, press.pick, chat
            )
        except (FeedbackLimited, AgainRefused) as refused:
            await outbox.answer(query.id, str(refused))
            return
        await outbox.answer(query.id, said)
        assert target is not None and target.reply_to is not None
        await outbox.edit_buttons(target.chat_id, target.reply_to, choice_keyboard(press.pair_id, press.pick))
