"""Everything Iris sends to Telegram, with network failures retried and formatting fallback.

Telegram's sending limits (and its 429 flood waits) are the bot's rate limiter's
(``bots.telegram_bot.limits``); what it lacks is here: a call that fails on the
network is repeated, and markup Telegram cannot parse is sent again as plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from telegram import Bot, ForceReply, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, NetworkError, TelegramError

from bots.telegram_bot.formatting import Rendered

log = logging.getLogger(__name__)

T = TypeVar("T")

# Telegram shows "typing…" for five seconds, or until the bot sends a message.
TYPING_EVERY_S = 4.0
# Network failures (not refusals) are retried this often, backing off up to 10 s.
MAX_NETWORK_RETRIES = 4
_NOTHING = object()  # no buttons sent yet (None is a state: no buttons)


@dataclass(frozen=True)
class Target:
    """Where a message goes: a chat, a forum topic in it, and the message it answers."""

    chat_id: int
    thread_id: int | None = None
    reply_to: int | None = None

    @property
    def reply_parameters(self) -> ReplyParameters | None:
        """Quote ``reply_to`` if it still exists; send anyway if it was deleted meanwhile."""
        if self.reply_to is None:
            return None
        return ReplyParameters(self.reply_to, allow_sending_without_reply=True)


def is_markup_error(error: BadRequest) -> bool:
    return "parse entities" in error.message.lower()


def is_unchanged_error(error: BadRequest) -> bool:
    return "not modified" in error.message.lower()


class Outbox:
    """Sends and edits messages through one bot."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        # The buttons wanted under each message whose edit waits for its turn (``edit_buttons``).
        self._buttons: dict[tuple[int, int], InlineKeyboardMarkup | None] = {}

    async def call(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run one Bot API call, retrying network failures (the rate limiter waits out flood control)."""
        failures = 0
        while True:
            try:
                return await action()
            except BadRequest:
                raise  # a refusal, not a network failure: repeating it changes nothing
            except NetworkError as error:
                # A timed-out send may have arrived; a rare duplicate beats a lost reply.
                failures += 1
                if failures > MAX_NETWORK_RETRIES:
                    raise
                log.warning("Telegram call failed (%s); retrying", error)
                await asyncio.sleep(min(2.0**failures / 2, 10.0))

    async def send(
        self, target: Target, text: Rendered, markup: InlineKeyboardMarkup | ForceReply | None = None
    ) -> int:
        """Send a message, formatted if Telegram accepts it; return its message id."""

        def attempt(body: str, parse_mode: str | None) -> Callable[[], Awaitable[Message]]:
            return lambda: self.bot.send_message(
                target.chat_id,
                body,
                parse_mode=parse_mode,
                message_thread_id=target.thread_id,
                reply_parameters=target.reply_parameters,
                reply_markup=markup,
            )

        try:
            message = await self.call(attempt(text.html, ParseMode.HTML))
        except BadRequest as error:
            if not is_markup_error(error):
                raise
            log.info("Telegram refused the formatting (%s); sending plain text", error.message)
            message = await self.call(attempt(text.plain, None))
        return message.message_id

    async def edit(
        self, chat_id: int, message_id: int, text: Rendered, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        """Replace a message's text (and buttons); an edit that changes nothing is fine."""

        def attempt(body: str, parse_mode: str | None) -> Callable[[], Awaitable[object]]:
            return lambda: self.bot.edit_message_text(
                body, chat_id=chat_id, message_id=message_id, parse_mode=parse_mode, reply_markup=markup
            )

        try:
            try:
                await self.call(attempt(text.html, ParseMode.HTML))
            except BadRequest as error:
                if not is_markup_error(error):
                    raise
                log.info("Telegram refused the formatting (%s); editing in plain text", error.message)
                await self.call(attempt(text.plain, None))
        except BadRequest as error:
            if not is_unchanged_error(error):
                raise

    async def edit_buttons(self, chat_id: int, message_id: int, markup: InlineKeyboardMarkup | None) -> None:
        """Show ``markup`` under a message; of presses that come faster than the chat may be edited,
        only the latest state is sent.

        Telegram lets a chat be edited about once a second. Someone pressing 👍/👎 three times a
        second would otherwise queue an edit per press, each press's handler waiting its turn, and
        enough of them hold every slot the inbox gives presses and commands (another person's
        /help then waits). The edit already waiting sends whatever state is wanted when its turn
        comes; a press that finds one waiting only updates that state and returns.
        """
        key = (chat_id, message_id)
        waiting = key in self._buttons
        self._buttons[key] = markup
        if waiting:
            return
        try:
            sent: object = _NOTHING
            while (wanted := self._buttons[key]) is not sent:
                sent = wanted
                await self._edit_markup(chat_id, message_id, wanted)
        finally:
            del self._buttons[key]

    async def _edit_markup(self, chat_id: int, message_id: int, markup: InlineKeyboardMarkup | None) -> None:
        try:
            await self.call(
                lambda: self.bot.edit_message_reply_markup(
                    chat_id=chat_id, message_id=message_id, reply_markup=markup
                )
            )
        except BadRequest as error:
            if not is_unchanged_error(error):
                raise

    async def answer(self, callback_query_id: str, text: str, alert: bool = False) -> None:
        """Acknowledge a button press (the client shows a spinner until this arrives)."""
        try:
            await self.call(lambda: self.bot.answer_callback_query(callback_query_id, text, show_alert=alert))
        except BadRequest as error:
            # Presses expire after a while (e.g. while the bot was down): nothing to answer.
            log.info("could not answer a button press: %s", error.message)

    @contextlib.asynccontextmanager
    async def typing(self, target: Target) -> AsyncIterator[Callable[[], None]]:
        """Keep "typing…" showing until the block ends or the yielded ``stop`` is called."""

        async def keep_alive() -> None:
            while True:
                try:
                    await self.bot.send_chat_action(
                        target.chat_id, ChatAction.TYPING, message_thread_id=target.thread_id
                    )
                except TelegramError as error:
                    # Cosmetic: never worth a flood wait or a failed reply.
                    log.debug("typing indicator not sent: %s", error)
                await asyncio.sleep(TYPING_EVERY_S)

        task = asyncio.create_task(keep_alive(), name=f"typing:{target.chat_id}")

        def stop() -> None:
            task.cancel()

        try:
            yield stop
        finally:
            task.cancel()
            # wait() rather than awaiting the task: a cancel of this caller must not be swallowed.
            await asyncio.wait([task])
