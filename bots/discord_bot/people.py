"""Who someone is on Discord, where they wrote, and whether they may use the bot."""

from __future__ import annotations

from typing import Any

import discord

from core.access import AccessPolicy
from core.domain import Person

PLATFORM = "discord"


def person_of(user: discord.abc.User) -> Person:
    return Person(PLATFORM, str(user.id), user.display_name)


def role_ids(user: discord.abc.User) -> list[str]:
    """A member's roles, @everyone included (its id is the server's id); none in DMs."""
    roles = getattr(user, "roles", None) or []
    return [str(role.id) for role in roles]


def channel_ids(channel: Any, channel_id: int | None = None) -> tuple[str, str | None]:
    """The channel and thread a message is in: a thread belongs to its parent channel."""
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        return str(channel.parent_id), str(channel.id)
    if channel is not None:
        return str(channel.id), None
    return str(channel_id), None


def may_use(policy: AccessPolicy, user: discord.abc.User, channel: Any, channel_id: int | None = None) -> bool:
    """Apply the allowlists; a thread passes when it or its parent channel is listed."""
    parent, thread = channel_ids(channel, channel_id)
    roles = role_ids(user)
    if policy.allows(str(user.id), parent, roles):
        return True
    return thread is not None and policy.allows(str(user.id), thread, roles)


def listed_channel(policy: AccessPolicy, channel: Any) -> bool:
    """Whether a channel is one the bot may listen to without being addressed."""
    if not policy.allowed_chats:
        return True
    parent, thread = channel_ids(channel)
    return parent in policy.allowed_chats or (thread is not None and thread in policy.allowed_chats)
