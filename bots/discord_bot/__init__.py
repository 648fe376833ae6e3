"""Discord adapter (discord.py): voice messages in, streamed replies out, feedback by buttons.

``serve`` is what ``iris run discord`` (and ``iris run all``) runs; ``build_client``
gives tests and other hosts the client without starting it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bots.settings import Settings
from core.ports import Inbox
from core.service import ChatService

if TYPE_CHECKING:
    from bots.discord_bot.client import IrisClient

log = logging.getLogger(__name__)


def build_client(service: ChatService, settings: Settings) -> IrisClient:
    """The Discord client for ``service``; call ``await client.start(token)`` in a running loop."""
    from bots.discord_bot.client import IrisClient

    return IrisClient(service, settings)


async def serve(service: ChatService, settings: Settings, inbox: Inbox | None = None) -> None:
    """Run the Discord bot in the current event loop until cancelled.

    ``inbox`` is not used: the gateway delivers each event to one connected shard, and
    shards (``DISCORD_SHARD_IDS``) split the work between processes instead.
    """
    import discord

    token = settings.discord_bot_token.get_secret_value() if settings.discord_bot_token else ""
    if not token:
        raise ValueError("DISCORD_BOT_TOKEN is not set")
    client = build_client(service, settings)
    async with client:
        try:
            await client.start(token)
        except discord.LoginFailure:
            log.error("Discord refused DISCORD_BOT_TOKEN; copy the token again from the Developer Portal")
            raise
        except discord.PrivilegedIntentsRequired:
            log.error(
                "Discord refused the Message Content intent: switch it on in the Developer Portal "
                "(Bot → Privileged Gateway Intents) or set DISCORD_MESSAGE_CONTENT=false"
            )
            raise


__all__ = ["build_client", "serve"]
