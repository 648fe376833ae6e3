"""Reading a Telegram message: who sent it, where, whether it is meant for the bot, what audio it holds."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Message, MessageEntity, User
from telegram.constants import ChatType

from bots.telegram_bot.periods import seconds
from core.domain import ChatRef, Person
from core.i18n import N_, _

PLATFORM = "telegram"


@dataclass(frozen=True)
class Attachment:
    """An audio file as Telegram describes it before download."""

    file_id: str
    size: int | None
    seconds: float | None
    mime_type: str | None
    filename: str | None
    kind: str  # "voice note", "audio file", "video note"


def person_of(user: User) -> Person:
    return Person(PLATFORM, str(user.id), user.full_name)


def chat_of(message: Message) -> ChatRef:
    # Only forum topics are separate conversations; in other groups a
    # message_thread_id just names a reply chain.
    thread = str(message.message_thread_id) if message.is_topic_message and message.message_thread_id else None
    return ChatRef(PLATFORM, str(message.chat.id), thread)


def is_private(message: Message) -> bool:
    return message.chat.type == ChatType.PRIVATE


def attachment_of(message: Message) -> Attachment | None:
    """The voice note, audio file, video note or audio document in a message, if any."""
    if message.voice:
        voice = message.voice
        return Attachment(
            voice.file_id, voice.file_size, seconds(voice, "duration"), voice.mime_type, None, "voice note"
        )
    if message.audio:
        audio = message.audio
        return Attachment(
            audio.file_id,
            audio.file_size,
            seconds(audio, "duration"),
            audio.mime_type,
            audio.file_name,
            "audio file",
        )
    if message.video_note:
        note = message.video_note
        return Attachment(
            note.file_id, note.file_size, seconds(note, "duration"), "video/mp4", None, "video note"
        )
    document = message.document
    if document and (document.mime_type or "").startswith("audio/"):
        return Attachment(
            document.file_id, document.file_size, None, document.mime_type, document.file_name, "audio file"
        )
    return None


# Whole sentences per kind of attachment, so that each language can word them its own way.
_TOO_BIG = {
    "voice note": N_("That voice note is {size} MB; I can take files up to {limit} MB."),
    "audio file": N_("That audio file is {size} MB; I can take files up to {limit} MB."),
    "video note": N_("That video note is {size} MB; I can take files up to {limit} MB."),
}
_TOO_LONG = {
    "voice note": N_("That voice note is {seconds} s long; I can take up to {limit} s."),
    "audio file": N_("That audio file is {seconds} s long; I can take up to {limit} s."),
    "video note": N_("That video note is {seconds} s long; I can take up to {limit} s."),
}


def limit_refusal(attachment: Attachment, max_bytes: int, max_seconds: float) -> str | None:
    """Why an attachment is refused before download (with the limit stated), or None."""
    if attachment.size is not None and attachment.size > max_bytes:
        return _(_TOO_BIG[attachment.kind]).format(
            size=f"{attachment.size / 1024 / 1024:.1f}", limit=f"{max_bytes / 1024 / 1024:.0f}"
        )
    if attachment.seconds is not None and attachment.seconds > max_seconds:
        return _(_TOO_LONG[attachment.kind]).format(
            seconds=f"{attachment.seconds:.0f}", limit=f"{max_seconds:.0f}"
        )
    return None


def mentions(message: Message, bot_id: int, bot_username: str) -> bool:
    wanted = f"@{bot_username}".lower()
    kinds: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
    found = {**message.parse_entities(kinds), **message.parse_caption_entities(kinds)}
    return any(
        (entity.user is not None and entity.user.id == bot_id) or text.lower() == wanted
        for entity, text in found.items()
    )


def replies_to_bot(message: Message, bot_id: int) -> bool:
    replied = message.reply_to_message
    return replied is not None and replied.from_user is not None and replied.from_user.id == bot_id


def addressed_to_bot(message: Message, bot_id: int, bot_username: str, every_voice_note: bool) -> bool:
    """In a private chat everything is; in a group a mention, a reply, or (by setting) any audio."""
    if is_private(message):
        return True
    if replies_to_bot(message, bot_id) or mentions(message, bot_id, bot_username):
        return True
    return every_voice_note and attachment_of(message) is not None


def without_mention(text: str, bot_username: str) -> str:
    """The text with the bot's @name taken out ("@iris_bot what's up?" → "what's up?")."""
    return re.sub(rf"@{re.escape(bot_username)}\b[,:]?", "", text, flags=re.IGNORECASE).strip()
