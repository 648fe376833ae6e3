"""``/persona``: admins add, change, remove and choose personas (``core.persona_admin``).

Every answer is ephemeral: only the admin sees the prompts. ``/persona use`` sets the channel's
persona (a thread's is its channel's) and posts the persona's greeting in the channel for all to
see. People who are not admins are refused in one line, with nothing stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bots import persona_render as render
from bots.discord_bot.components import ADMINS_ONLY, guarded, is_admin, tell
from bots.discord_bot.people import PLATFORM, channel_ids
from bots.discord_bot.replies import MESSAGE_LIMIT
from core.domain import ChatRef
from core.i18n import N_, _
from core.persona_admin import PersonaAdminUnavailable, cleared
from core.personas import DEFAULT, Persona, PersonaInvalid, PersonaNotFound, PersonaRefused

if TYPE_CHECKING:
    from bots.discord_bot.client import IrisClient

Interaction = discord.Interaction[Any]

REFUSED = (PersonaInvalid, PersonaNotFound, PersonaRefused)


def add_persona_commands(tree: app_commands.CommandTree[Any], bot: IrisClient) -> None:
    """``/persona list|add|edit|default|remove|use`` on the tree."""
    group = app_commands.Group(
        name="persona", description=N_("Personas: the prompts replies are written with (admins)")
    )

    @group.command(name="list", description=N_("Every persona, its settings and prompt (admins)"))
    async def list_command(interaction: Interaction) -> None:
        await _admin(interaction, lambda: _list(bot, interaction))

    @group.command(name="add", description=N_("Add a persona (admins)"))
    @app_commands.describe(
        name=N_("letters, digits, - and _"),
        prompt=N_("the system prompt (at most 4,000 characters)"),
        voice=N_("the voice of its spoken replies"),
        temperature=N_("its sampling temperature, 0 to 2"),
        greeting=N_("what it says first in a chat"),
        default=N_("make it the default persona"),
    )
    async def add_command(
        interaction: Interaction,
        name: str,
        prompt: str,
        voice: str | None = None,
        temperature: float | None = None,
        greeting: str | None = None,
        default: bool = False,
    ) -> None:
        wanted = Persona(
            name, prompt, voice=voice, temperature=temperature, greeting=greeting, is_default=default
        )
        await _admin(interaction, lambda: _change(interaction, lambda actor: _add(bot, wanted, actor)))

    @group.command(name="edit", description=N_("Change a persona; a new prompt is its next version (admins)"))
    @app_commands.describe(
        name=N_("the persona"),
        prompt=N_("a new system prompt"),
        voice=N_("a voice for its spoken replies (none: take it away)"),
        temperature=N_("its sampling temperature, 0 to 2"),
        greeting=N_("what it says first in a chat (none: take it away)"),
    )
    async def edit_command(
        interaction: Interaction,
        name: str,
        prompt: str | None = None,
        voice: str | None = None,
        temperature: float | None = None,
        greeting: str | None = None,
    ) -> None:
        async def edit(actor: str) -> str:
            changed = await bot.service.personas.edit(
                name,
                actor,
                prompt=prompt,
                voice=cleared(voice),
                temperature=temperature,
                greeting=cleared(greeting),
            )
            return render.edited(changed)

        await _admin(interaction, lambda: _change(interaction, edit))

    @group.command(name="default", description=N_("Chats without a persona of their own use this one (admins)"))
    @app_commands.describe(name=N_("the persona"))
    async def default_command(interaction: Interaction, name: str) -> None:
        async def make_default(actor: str) -> str:
            return render.made_default(await bot.service.personas.make_default(name, actor))

        await _admin(interaction, lambda: _change(interaction, make_default))

    @group.command(name="remove", description=N_("Remove a persona; its chats go back to the default (admins)"))
    @app_commands.describe(name=N_("the persona"))
    async def remove_command(interaction: Interaction, name: str) -> None:
        async def remove(actor: str) -> str:
            return render.removed(name, await bot.service.personas.remove(name, actor))

        await _admin(interaction, lambda: _change(interaction, remove))

    @group.command(name="use", description=N_("This channel's persona, from its next reply (admins)"))
    @app_commands.describe(name=N_("a persona, or default"))
    async def use_command(interaction: Interaction, name: str) -> None:
        await _admin(interaction, lambda: _use(bot, interaction, name))

    tree.add_command(group)


async def _admin(interaction: Interaction, work: Callable[[], Awaitable[None]]) -> None:
    """Do ``work`` for an admin; anyone else is told in one line, and nothing is done."""
    if not is_admin(interaction):
        await tell(interaction, _(ADMINS_ONLY))
        return
    await guarded(interaction, work())


async def _list(bot: IrisClient, interaction: Interaction) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        pieces = render.listing(await bot.service.personas.listing(), MESSAGE_LIMIT)
    except PersonaAdminUnavailable:
        pieces = [_(render.NOT_STORED)]
    for piece in pieces:
        await tell(interaction, piece)


async def _change(interaction: Interaction, change: Callable[[str], Awaitable[str]]) -> None:
    """Make one change as the admin; tell them what happened, or why nothing did (one line)."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await change(f"{PLATFORM}:{interaction.user.id}")
    except REFUSED as error:
        text = render.not_changed(error)
    except PersonaAdminUnavailable:
        text = _(render.NOT_STORED)
    await tell(interaction, text)


async def _add(bot: IrisClient, wanted: Persona, actor: str) -> str:
    return render.added(await bot.service.personas.add(wanted, actor))


async def _use(bot: IrisClient, interaction: Interaction, name: str) -> None:
    """Set the channel's persona; the greeting of the persona it now has goes to the channel."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    chat_id, _thread = channel_ids(interaction.channel, interaction.channel_id)
    chosen = None if name.casefold() == DEFAULT else name
    actor = f"{PLATFORM}:{interaction.user.id}"
    try:
        persona = await bot.service.personas.use(ChatRef(PLATFORM, chat_id), chosen, actor)
    except REFUSED as error:
        await tell(interaction, render.not_changed(error))
        return
    except PersonaAdminUnavailable:
        await tell(interaction, _(render.NOT_STORED))
        return
    await tell(interaction, render.now_using(persona, chosen))
    if persona is not None and persona.greeting:
        await interaction.followup.send(persona.greeting[:MESSAGE_LIMIT], ephemeral=False)
