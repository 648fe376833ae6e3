"""Messages to the bot: voice notes, audio files, video notes and text, answered through the service."""

from __future__ import annotations

import logging
from dataclasses import replace

from telegram import Message, Update, User
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bots.delivery import ReplyStream
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.incoming import (
    Attachment,
    addressed_to_bot,
    attachment_of,
    chat_of,
    limit_refusal,
    person_of,
    without_mention,
)
from bots.telegram_bot.outbox import Target
from bots.telegram_bot.streaming import TelegramChat
from core.domain import Audio, IncomingMessage
from core.feedback import FeedbackLimited, UnknownReply
from core.i18n import N_, _

log = logging.getLogger(__name__)

DOWNLOAD_FAILED = N_("I could not fetch that file from Telegram. Please send it again.")
UNSUPPORTED = N_("Send me a voice note, an audio file or a text message.")
CORRECTION_SAVED = N_("Thanks! I saved your answer; it waits for review before I learn from it.")
CORRECTION_NEEDS_TEXT = N_("Please type the better answer as a text message, or send /cancel.")
REPLY_GONE = N_("That reply is no longer stored, so there is nothing to correct.")


class Conversation:
    """Turns a Telegram message into one ``service.replies.handle`` call and shows what comes back."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or user.is_bot:
            return
        # In the database: the ✏️ may have been pressed before a restart, or in another process.
        pending = await self.adapter.service.feedback.awaited_correction(chat_of(message), person_of(user))
        every_voice = self.adapter.settings.telegram_group_voice == "all"
        if pending is None and not addressed_to_bot(message, context.bot.id, context.bot.username, every_voice):
            return
        if not await self.adapter.admitted(update):
            return
        target = self.adapter.target(message)
        if pending is not None:
            await self._take_correction(message, user, pending, target, context.bot.username)
            return
        incoming = await self._translate(message, user, target, context.bot.username)
        if incoming is None:
            return
        if self.adapter.redelivered(update.update_id):
            incoming = replace(incoming, redelivered=True)
        shown = self.adapter.shown_for(update.update_id)
        chat = TelegramChat(self.adapter.outbox, target, voice_reply_to=message.message_id, shown=shown)
        stream = ReplyStream(chat, self.adapter.edit_interval(message))
        await stream.render(self.adapter.service.replies.handle(incoming))
        await chat.drop_unused()

    async def on_unsupported(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A sticker, photo or the like in a private chat: say what works."""
        message = update.effective_message
        if message is not None and await self.adapter.admitted(update):
            await self.adapter.outbox.send(self.adapter.target(message), plain_text(_(UNSUPPORTED)))

    async def _translate(
        self, message: Message, user: User, target: Target, bot_username: str
    ) -> IncomingMessage | None:
        attachment = attachment_of(message)
        if attachment is None:
            return self._incoming(message, user, text=without_mention(message.text or "", bot_username))
        settings = self.adapter.settings
        refusal = limit_refusal(attachment, settings.chat.max_file_bytes, settings.chat.max_audio_seconds)
        if refusal is not None:
            await self.adapter.outbox.send(target, plain_text(refusal))
            return None
        data = await self._download(attachment, message, target)
        if data is None:
            return None
        return self._incoming(message, user, audio=Audio(data, attachment.mime_type, attachment.filename))

    def _incoming(
        self, message: Message, user: User, *, text: str | None = None, audio: Audio | None = None
    ) -> IncomingMessage:
        return IncomingMessage(
            chat_of(message),
            person_of(user),
            text=text,
            audio=audio,
            message_id=str(message.message_id),
            shared_history=self.adapter.shared_history(message),
        )

    async def _download(self, attachment: Attachment, message: Message, target: Target) -> bytes | None:
        """The file's bytes, or None once the person has been told why not."""
        outbox = self.adapter.outbox
        chat = self.adapter.settings.chat
        try:
            file = await outbox.call(lambda: message.get_bot().get_file(attachment.file_id))
            # The message's file_size is optional (documents often come without); getFile's is Telegram's.
            known = replace(attachment, size=file.file_size or attachment.size)
            refusal = limit_refusal(known, chat.max_file_bytes, chat.max_audio_seconds)
            if refusal is not None:
                await outbox.send(target, plain_text(refusal))
                return None
            return bytes(await outbox.call(file.download_as_bytearray))
        except TelegramError as error:
            log.warning("could not download %s %s: %s", attachment.kind, attachment.file_id, error)
            await outbox.send(target, plain_text(_(DOWNLOAD_FAILED)))
            return None

    async def _take_correction(
        self, message: Message, user: User, turn_id: int, target: Target, bot_username: str
    ) -> None:
        outbox = self.adapter.outbox
        text = without_mention(message.text or "", bot_username)
        if not text:
            await outbox.send(target, plain_text(_(CORRECTION_NEEDS_TEXT)))
            return
        try:
            await self.adapter.service.feedback.correct(person_of(user), turn_id, text, chat_of(message))
        except UnknownReply:
            await outbox.send(target, plain_text(_(REPLY_GONE)))
        except FeedbackLimited as limited:
            await outbox.send(target, plain_text(str(limited)))
        else:
            await outbox.send(target, plain_text(_(CORRECTION_SAVED)))
        await self.adapter.service.feedback.drop_awaited_correction(chat_of(message), person_of(user))
