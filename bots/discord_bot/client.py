"""The discord.py client: connects, listens for messages and hands them to the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import discord
import yarl
from discord import app_commands

from bots.delivery import ReplyStream
from bots.discord_bot.choices import DYNAMIC_ITEMS as CHOICE_ITEMS
from bots.discord_bot.commands import add_commands
from bots.discord_bot.components import DYNAMIC_ITEMS, SORRY, take_correction_form
from bots.discord_bot.incoming import Refusal, ReplyChains, addressed, read_message
from bots.discord_bot.language import CatalogTranslator, LocalizedTree, speak_their_language, speak_to_author
from bots.discord_bot.people import PLATFORM, may_use
from bots.discord_bot.replies import DiscordChat, reply_to
from bots.discord_bot.review import DYNAMIC_ITEMS as REVIEW_ITEMS
from bots.discord_bot.review import take_review_form
from bots.settings import Settings
from core.access import REFUSAL
from core.domain import IncomingMessage, ServiceEvent
from core.i18n import _
from core.ports import UnansweredTurn
from core.service import ChatService

log = logging.getLogger(__name__)

# Ordinary messages and replies; joins, pins, boosts and the like are not talk.
TALK = (discord.MessageType.default, discord.MessageType.reply)

# Why a turn left unanswered by a stopped process can no longer be answered (stored on the turn).
MESSAGE_GONE = "The message was deleted before it was answered."
CHANNEL_GONE = "The channel was deleted, or I lost access to it, before the message was answered."


class IrisClient(discord.AutoShardedClient):
    """Iris on Discord: one ``ChatService`` call per message, the events rendered back.

    Sharded (discord.py's ``AutoShardedClient``): with ``DISCORD_SHARD_COUNT`` and
    ``DISCORD_SHARD_IDS`` each process connects only its own shards, and Discord sends
    it the events of their servers (DMs: shard 0); without them, this process takes
    every shard Discord advises.
    """

    def __init__(self, service: ChatService, settings: Settings) -> None:
        intents = discord.Intents.default()
        intents.message_content = settings.discord_message_content
        shards: dict[str, Any] = {}
        if settings.discord_shard_ids and not settings.discord_shard_count:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the same in every process)")
        if settings.discord_shard_count:
            shards = {"shard_count": settings.discord_shard_count}
            shards["shard_ids"] = settings.discord_shard_ids or None
        # Whatever the model writes, a reply never pings @everyone, a role or a person.
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none(), **shards)
        self.service = service
        self.settings = settings
        self.chains = ReplyChains()
        self._background: set[asyncio.Task[None]] = set()
        # What was stored before this moment was received by a process that stopped: see _recover.
        self.started_at = datetime.now(UTC)
        self.recovery: asyncio.Task[None] | None = None  # the one run of _recover, once ready
        self.tree: app_commands.CommandTree[Any] = LocalizedTree(self)
        self.tree.error(self._on_command_error)
        add_commands(self.tree, self)

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold a background task until it ends (the loop keeps only weak references)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def login(self, token: str) -> None:
        # discord.py builds every REST URL (interaction callbacks and follow-ups too)
        # from this class attribute; there is no per-client setting.
        discord.http.Route.BASE = self.settings.discord_api_base_url.rstrip("/")
        await super().login(token)

    async def setup_hook(self) -> None:
        await self._use_gateway_of_api()
        self.add_dynamic_items(*DYNAMIC_ITEMS, *REVIEW_ITEMS, *CHOICE_ITEMS)
        await self.tree.set_translator(CatalogTranslator())  # descriptions in every catalog's language
        if self.settings.discord_sync_commands:
            await self.tree.sync()

    async def _use_gateway_of_api(self) -> None:
        # A client without shards never asks the REST API where the gateway is: it
        # dials DiscordWebSocket.DEFAULT_GATEWAY. Ask the configured API instead, so a
        # proxy (or a test's fake) serves the gateway too.
        _shards, url, _limits = await self.http.get_bot_gateway()
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        log.info("Discord gateway: %s", url)

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s (%s)", self.user, self.user.id if self.user else "?")
        if self.recovery is None:  # on_ready comes again after a reconnect: recover once
            self.recovery = asyncio.create_task(self._recover())
            self.keep(self.recovery)

    async def _recover(self) -> None:
        """Answer the messages that processes which stopped had stored and not answered.

        Discord does not send a message again to a new session, so they are read from the
        database, fetched again from Discord and answered (the service claims each turn, so
        of several processes starting at once only one answers it). Only this process's
        channels: those of its shards' servers, and DMs when it holds shard 0.
        """
        try:
            turns = await self.service.replies.unanswered(PLATFORM, self.started_at)
        except Exception:
            log.exception("could not read the messages left unanswered before this start")
            return
        if turns:
            log.info("%s message(s) left unanswered before this start", len(turns))
        for turn in turns:  # oldest first, one at a time: each person's in the order they wrote
            try:
                await self._recover_turn(turn)
            except Exception:
                log.exception("could not answer turn %s left unanswered before this start", turn.turn_id)

    async def _recover_turn(self, turn: UnansweredTurn) -> None:
        me = self.user
        try:
            channel = await self._channel_of(turn)
            if channel is None:
                return  # another process's shard answers it
            message = await channel.fetch_message(int(turn.message_id))
        except discord.NotFound as gone:
            is_message = gone.code == 10008  # Unknown Message; else the channel is gone
            await self.service.replies.give_up(turn, MESSAGE_GONE if is_message else CHANNEL_GONE)
            return
        except discord.Forbidden:
            await self.service.replies.give_up(turn, CHANNEL_GONE)
            return
        if me is None:
            return
        incoming = await read_message(message, me, self.settings, self.chains)
        # A voice note that cannot be downloaded again: the service asks for it again.
        events = self.service.replies.recover(turn, incoming if isinstance(incoming, IncomingMessage) else None)
        await self._render(message, incoming if isinstance(incoming, IncomingMessage) else None, events)

    async def _channel_of(self, turn: UnansweredTurn) -> discord.abc.Messageable | None:
        """The channel (or thread) of a stored turn if it is this process's to answer, else None.

        Raises ``discord.NotFound`` or ``discord.Forbidden`` for a channel that is gone.
        """
        for channel_id in (turn.chat.thread_id, turn.chat.chat_id):  # a thread id, or a reply chain's root
            channel = self.get_channel(int(channel_id)) if channel_id and channel_id.isdigit() else None
            if isinstance(channel, discord.abc.Messageable):
                return channel  # in this process's cache: a server of its shards
        if self.shard_ids is not None and 0 not in self.shard_ids:
            return None  # DMs come to shard 0; other servers' channels are other processes'
        fetched = await self.fetch_channel(int(turn.chat.chat_id))
        return fetched if isinstance(fetched, discord.DMChannel) else None

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        # A submitted correction form: discord.py drops a modal submit whose Modal object this
        # process does not hold (opened before a restart, or by another process).
        if interaction.type is discord.InteractionType.modal_submit:
            await speak_their_language(interaction)
        await take_correction_form(interaction)
        await take_review_form(interaction)

    async def on_message(self, message: discord.Message) -> None:
        me = self.user
        if me is None or message.author.bot or message.type not in TALK:
            return
        if not addressed(message, me, self.settings):
            return
        try:
            await speak_to_author(self, message.author)
            await self._answer(message, me)
        except Exception:
            log.exception("could not answer message %s", message.id)
            with contextlib.suppress(discord.HTTPException):
                await reply_to(message, _(SORRY))

    async def _answer(self, message: discord.Message, me: discord.ClientUser) -> None:
        if not may_use(self.settings.access, message.author, message.channel):
            await reply_to(message, _(REFUSAL))  # nothing is stored for them
            return
        incoming = await read_message(message, me, self.settings, self.chains)
        if isinstance(incoming, Refusal):
            await reply_to(message, incoming.text)
            return
        await self._render(message, incoming, self.service.replies.handle(incoming))

    async def _render(
        self, message: discord.Message, incoming: IncomingMessage | None, events: AsyncIterator[ServiceEvent]
    ) -> None:
        """Show the service's events as replies to ``message``, remembering them in its reply chain."""
        chat = DiscordChat(message)
        await ReplyStream(chat, self.settings.discord_edit_interval_seconds).render(events)
        if incoming is None:
            return
        if self.settings.discord_conversation == "reply_chain" and incoming.chat.thread_id is not None:
            root = int(incoming.chat.thread_id)
            for sent in chat.sent:
                self.chains.remember(sent.id, root)

    async def _on_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        log.error("slash command failed", exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(_(SORRY), ephemeral=True)
            else:
                await interaction.response.send_message(_(SORRY), ephemeral=True)
