"""Turning a Discord message addressed to the bot into the core's ``IncomingMessage``."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import PurePosixPath

import discord

from bots.discord_bot.people import PLATFORM, channel_ids, listed_channel, person_of
from bots.settings import Settings
from core.domain import Audio, ChatRef, IncomingMessage
from core.i18n import N_, _

log = logging.getLogger(__name__)

# Used when an attachment has no content type; a URL's ending is no guide (it carries a query string).
AUDIO_SUFFIXES = frozenset({".ogg", ".oga", ".opus", ".mp3", ".m4a", ".wav", ".flac", ".aac", ".webm"})

NOT_AUDIO = N_("I can take voice messages, audio files and text, but not that kind of attachment.")
DOWNLOAD_FAILED = N_("I could not download that file from Discord; please send it again.")


@dataclass(frozen=True)
class Refusal:
    """A message the bot will not pass on, with what to tell the person."""

    text: str


def addressed(message: discord.Message, me: discord.ClientUser, settings: Settings) -> bool:
    """Whether the bot should answer: DMs always; in servers per ``DISCORD_REPLY_MODE``."""
    if message.guild is None:
        return True
    if any(user.id == me.id for user in message.mentions):
        return True
    own_role = message.guild.self_role
    if own_role is not None and own_role in message.role_mentions:
        return True
    if _replied_to(message) == me.id:
        return True
    mode = settings.discord_reply_mode
    if mode == "mention" or not listed_channel(settings.access, message.channel):
        return False
    return mode == "all" or any(attachment.is_voice_message() for attachment in message.attachments)


def _replied_to(message: discord.Message) -> int | None:
    """The author id of the message this one replies to, when Discord sent it along."""
    reference = message.reference
    if reference is not None and isinstance(reference.resolved, discord.Message):
        return reference.resolved.author.id
    return None


def audio_attachment(message: discord.Message) -> discord.Attachment | None:
    """The voice message or audio file attached, if any (voice messages first)."""
    for attachment in message.attachments:
        if attachment.is_voice_message():
            return attachment
    for attachment in message.attachments:
        kind = _mime(attachment)
        if (kind or "").startswith("audio/"):
            return attachment
        if kind is None and PurePosixPath(attachment.filename).suffix.lower() in AUDIO_SUFFIXES:
            return attachment
    return None


def _mime(attachment: discord.Attachment) -> str | None:
    if not attachment.content_type:
        return None
    return attachment.content_type.split(";")[0].strip().lower() or None


def limit_refusal(attachment: discord.Attachment, settings: Settings) -> Refusal | None:
    """Refuse a file over the size limit, or a voice message over the duration limit, unread."""
    if attachment.size > settings.chat.max_file_bytes:
        return Refusal(
            _("That file is too large: the limit is {megabytes} MB.").format(
                megabytes=f"{settings.chat.max_file_mb:g}"
            )
        )
    limit = settings.chat.max_audio_seconds
    if attachment.duration is not None and attachment.duration > limit:
        seconds = attachment.duration
        return Refusal(
            _("That voice message is {seconds} s long; I can take up to {limit} s.").format(
                seconds=f"{seconds:.0f}", limit=f"{limit:.0f}"
            )
        )
    return None


def text_of(message: discord.Message, me: discord.ClientUser) -> str:
    """The message text without the mention that addressed the bot."""
    mentions = [rf"<@!?{me.id}>"]
    own_role = message.guild.self_role if message.guild is not None else None
    if own_role is not None:
        mentions.append(rf"<@&{own_role.id}>")
    return re.sub("|".join(mentions), "", message.content).strip()


async def read_message(
    message: discord.Message, me: discord.ClientUser, settings: Settings, chains: ReplyChains
) -> IncomingMessage | Refusal:
    """Translate a message; an audio attachment is checked against the limits before download."""
    chat = await chat_of(message, settings, chains)
    person = person_of(message.author)
    shared = settings.shared_group_history and message.guild is not None
    attachment = audio_attachment(message)
    if attachment is None:
        text = text_of(message, me)
        if not text and message.attachments:
            return Refusal(_(NOT_AUDIO))
        return IncomingMessage(chat, person, text=text, message_id=str(message.id), shared_history=shared)
    refusal = limit_refusal(attachment, settings)
    if refusal is not None:
        return refusal
    try:
        data = await attachment.read()
    except (discord.HTTPException, OSError):
        log.warning("could not download attachment %s of message %s", attachment.id, message.id, exc_info=True)
        return Refusal(_(DOWNLOAD_FAILED))
    audio = Audio(data, _mime(attachment), attachment.filename)
    return IncomingMessage(chat, person, audio=audio, message_id=str(message.id), shared_history=shared)


async def chat_of(message: discord.Message, settings: Settings, chains: ReplyChains) -> ChatRef:
    """The conversation a message belongs to: its channel or thread, or its reply chain."""
    chat_id, thread_id = channel_ids(message.channel)
    if settings.discord_conversation == "reply_chain":
        thread_id = str(await chains.root_of(message))
    return ChatRef(PLATFORM, chat_id, thread_id)


class ReplyChains:
    """Finds the first message of a reply chain, remembering what it has seen.

    The bot records its own replies as it sends them, so a person replying to
    one costs no request; after a restart the chain is walked back with at most
    ``max_hops`` message fetches (which needs Read Message History).
    """

    def __init__(self, capacity: int = 50_000, max_hops: int = 50) -> None:
        self.capacity = capacity
        self.max_hops = max_hops
        self._roots: OrderedDict[int, int] = OrderedDict()

    def remember(self, message_id: int, root: int) -> None:
        self._roots[message_id] = root
        self._roots.move_to_end(message_id)
        while len(self._roots) > self.capacity:
            self._roots.popitem(last=False)

    async def root_of(self, message: discord.Message) -> int:
        path: list[int] = []
        current = message
        root: int | None = None
        for _hop in range(self.max_hops):
            if current.id in self._roots:
                root = self._roots[current.id]
                break
            path.append(current.id)
            parent_id = _parent_id(current)
            if parent_id is None:
                root = current.id
                break
            if parent_id in self._roots:
                root = self._roots[parent_id]
                break
            parent = await _parent(current, parent_id)
            if parent is None:  # deleted or unreadable: the chain starts there
                root = parent_id
                break
            current = parent
        if root is None:
            root = current.id
        for message_id in path:
            self.remember(message_id, root)
        return root


def _parent_id(message: discord.Message) -> int | None:
    reference = message.reference
    if reference is None or reference.type is not discord.MessageReferenceType.reply:
        return None  # not a reply (a forward, or nothing)
    if reference.channel_id != message.channel.id:
        return None
    return reference.message_id


async def _parent(message: discord.Message, parent_id: int) -> discord.Message | None:
    reference = message.reference
    if reference is not None and isinstance(reference.resolved, discord.Message):
        return reference.resolved
    try:
        return await message.channel.fetch_message(parent_id)
    except discord.HTTPException:
        return None
