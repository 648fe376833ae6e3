"""The discord.py client: connects, listens for messages and hands them to the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord
import yarl
from discord import app_commands

from bots.delivery import ReplyStream
from bots.discord_bot.commands import add_commands
from bots.discord_bot.components import DYNAMIC_ITEMS, SORRY
from bots.discord_bot.incoming import Refusal, ReplyChains, addressed, read_message
from bots.discord_bot.people import may_use
from bots.discord_bot.replies import DiscordChat, reply_to
from bots.settings import Settings
from core.access import REFUSAL
from core.service import ChatService

log = logging.getLogger(__name__)

# Ordinary messages and replies; joins, pins, boosts and the like are not talk.
TALK = (discord.MessageType.default, discord.MessageType.reply)


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
        self.tree: app_commands.CommandTree[Any] = app_commands.CommandTree(self)
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
        self.add_dynamic_items(*DYNAMIC_ITEMS)
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

    async def on_message(self, message: discord.Message) -> None:
        me = self.user
        if me is None or message.author.bot or message.type not in TALK:
            return
        if not addressed(message, me, self.settings):
            return
        try:
            await self._answer(message, me)
        except Exception:
            log.exception("could not answer message %s", message.id)
            with contextlib.suppress(discord.HTTPException):
                await reply_to(message, SORRY)

    async def _answer(self, message: discord.Message, me: discord.ClientUser) -> None:
        if not may_use(self.settings.access, message.author, message.channel):
            await reply_to(message, REFUSAL)  # nothing is stored for them
            return
        incoming = await read_message(message, me, self.settings, self.chains)
        if isinstance(incoming, Refusal):
            await reply_to(message, incoming.text)
            return
        chat = DiscordChat(message)
        await ReplyStream(chat, self.settings.discord_edit_interval_seconds).render(
            self.service.handle(incoming)
        )
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
                await interaction.followup.send(SORRY, ephemeral=True)
            else:
                await interaction.response.send_message(SORRY, ephemeral=True)
