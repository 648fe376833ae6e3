"""What every Telegram handler shares: the service, the settings, the outbox."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from telegram import Message, Update
from telegram.ext import ContextTypes

from bots.settings import Settings
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.incoming import person_of
from bots.telegram_bot.outbox import Outbox, Target
from bots.telegram_bot.streaming import Shown
from core import i18n
from core.access import REFUSAL, AccessPolicy
from core.i18n import _
from core.service import ChatService

log = logging.getLogger(__name__)


@dataclass
class Adapter:
    service: ChatService
    settings: Settings
    outbox: Outbox
    # Whether an update was taken over from a process that stopped while handling it.
    redelivered: Callable[[int], bool] = field(default=lambda update_id: False)
    # What is shown in answer to an update, kept in the inbox for a process that takes it over.
    shown_for: Callable[[int], Shown | None] = field(default=lambda update_id: None)

    def __post_init__(self) -> None:
        self.access: AccessPolicy = self.settings.access

    def is_group(self, message: Message) -> bool:
        return message.chat.type != message.chat.PRIVATE

    def target(self, message: Message) -> Target:
        """Answer in the message's forum topic; in groups, as a reply to it."""
        thread = message.message_thread_id if message.is_topic_message else None
        return Target(message.chat.id, thread, message.message_id if self.is_group(message) else None)

    def edit_interval(self, message: Message) -> float:
        if self.is_group(message):
            return self.settings.telegram_group_edit_interval_seconds
        return self.settings.telegram_edit_interval_seconds

    def shared_history(self, message: Message) -> bool:
        return self.settings.shared_group_history and self.is_group(message)

    async def admitted(self, update: Update) -> bool:
        """Whether the sender may use the bot; a refused person gets the polite refusal, nothing else."""
        user, chat = update.effective_user, update.effective_chat
        if user is None or chat is None:
            return False
        if self.access.allows(str(user.id), str(chat.id)):
            return True
        log.info("refused Telegram user %s in chat %s", user.id, chat.id)
        if update.callback_query is not None:
            await self.outbox.answer(update.callback_query.id, _(REFUSAL), alert=True)
        elif update.effective_message is not None:
            await self.outbox.send(self.target(update.effective_message), plain_text(_(REFUSAL)))
        return False

    async def speak_their_language(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Iris's words for this update: the person's /language, else their app's ``language_code``.

        Runs first for every update, in the update's own task: the language holds for its handlers
        (and the tasks they start) only, never for another person's update handled alongside.
        """
        await self.speak_to(update)

    async def speak_to(self, update: object) -> None:
        """Speak the language of ``update``'s sender in the current task (also outside a handler:
        the inbox's notice of a set-aside update)."""
        user = update.effective_user if isinstance(update, Update) else None
        if user is None:
            i18n.use(None)
            return
        preference = await self.service.languages.preference(person_of(user))
        i18n.use(i18n.choose(preference, user.language_code))

    def is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and self.access.is_admin(str(user.id))
