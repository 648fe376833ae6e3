"""``/settings``: a channel's (or DM's) persona, spoken replies, reply length and earlier turns.

A slash command with an option per setting (``core.chat_settings``): the persona is typed with
autocomplete from the stored personas, the others are Discord choices, each with "default" for
the deployment's. With no option it shows the settings; with options it changes them, admins
anywhere and people in their DM where the deployment allows it, and shows them as they are now.
Options come from the client as typed, so every value is checked again here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands

from bots.discord_bot.components import SORRY, allowed, is_admin, pressed_in, tell
from bots.discord_bot.people import PLATFORM
from bots.discord_bot.replies import MESSAGE_LIMIT
from core.access import REFUSAL
from core.chat_settings import SETTING_NAMES, Setting, SettingInvalid, SettingsRefused, parse
from core.i18n import N_, _

if TYPE_CHECKING:
    from bots.discord_bot.client import IrisClient

log = logging.getLogger(__name__)

Interaction = discord.Interaction[Any]
TITLE = N_("Settings for this channel (each holds from the next reply):")
AUTOCOMPLETE_LIMIT = 25  # Discord shows at most 25 suggestions


def add_settings_command(tree: app_commands.CommandTree[Any], bot: IrisClient) -> None:
    """Register ``/settings`` on the tree (``commands.add_commands`` calls this)."""

    @tree.command(
        name="settings", description=N_("This chat's persona, spoken replies, reply length, earlier turns")
    )
    @app_commands.describe(
        persona=N_("A persona's name, or default"),
        spoken=N_("Voice replies: off, mirror (to voice messages), always; default: the deployment's"),
        length=N_("Reply length: short, normal or long"),
        turns=N_("How many earlier messages the reply sees"),
    )
    async def settings_command(
        interaction: Interaction,
        persona: str | None = None,
        spoken: Literal["default", "off", "mirror", "always"] | None = None,
        length: Literal["default", "short", "normal", "long"] | None = None,
        turns: Literal["default", "0", "4", "10", "20", "40"] | None = None,
    ) -> None:
        given = {
            Setting.PERSONA: persona,
            Setting.SPOKEN: spoken,
            Setting.LENGTH: length,
            Setting.HISTORY: turns,
        }
        try:
            await _settings(bot, interaction, {key: value for key, value in given.items() if value is not None})
        except Exception:
            log.exception("/settings failed")
            await tell(interaction, _(SORRY))

    @settings_command.autocomplete("persona")
    async def persona_names(interaction: Interaction, typed: str) -> list[app_commands.Choice[str]]:
        view = await bot.service.chat_settings.view(pressed_in(interaction))
        names = ["default", *view.personas]
        found = [name for name in names if typed.casefold() in name.casefold()][:AUTOCOMPLETE_LIMIT]
        return [app_commands.Choice(name=name, value=name) for name in found]


async def _settings(bot: IrisClient, interaction: Interaction, given: dict[Setting, str]) -> None:
    if not allowed(interaction):
        await tell(interaction, _(REFUSAL))
        return
    book, chat = bot.service.chat_settings, pressed_in(interaction)
    private, admin = interaction.guild_id is None, is_admin(interaction)
    if not book.may_change(admin=admin, private=private):
        await tell(interaction, book.refusal())
        return
    try:
        for setting, text in given.items():  # every value checked before any is stored
            parse(setting, text)
    except SettingInvalid as invalid:
        await tell(interaction, _("Nothing changed: {why}.").format(why=invalid))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    actor = f"{PLATFORM}:{interaction.user.id}"
    changed = []
    view = await book.view(chat)
    for setting, text in sorted(given.items(), key=lambda item: item[0] is not Setting.PERSONA):
        try:  # the persona first: the one a store may refuse (removed meanwhile), before the rest
            view = await book.change(chat, setting, text, actor, admin=admin, private=private)
        except (SettingInvalid, SettingsRefused) as refused:
            what = (
                _("no persona named {name!r}").format(name=text) if setting is Setting.PERSONA else str(refused)
            )
            # The persona is first: nothing else changed.
            await tell(interaction, _("Nothing changed: {why}.").format(why=what))
            return
        changed.append(_(SETTING_NAMES[setting]))
    title = _(TITLE)
    heading = _("Changed: {settings}.").format(settings=", ".join(changed)) + f"\n{title}" if changed else title
    await tell(interaction, "\n".join([heading, *view.lines()]))
    if Setting.PERSONA in given:  # as `/persona use` does: the persona the channel now has says hello
        greeting = await bot.service.personas.greeting(chat)
        if greeting:
            await interaction.followup.send(greeting[:MESSAGE_LIMIT], ephemeral=False)
