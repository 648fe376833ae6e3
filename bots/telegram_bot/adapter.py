"""What every Telegram handler shares: the service, the settings, the outbox."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from telegram import Message, Update

from bots.settings import Settings
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.outbox import Outbox, Target
from bots.telegram_bot.streaming import Shown
from core.access import REFUSAL, AccessPolicy
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
            await self.outbox.answer(update.callback_query.id, REFUSAL, alert=True)
        elif update.effective_message is not None:
            await self.outbox.send(self.target(update.effective_message), plain_text(REFUSAL))
        return False

    def is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and self.access.is_admin(str(user.id))
