"""Iris's words on Discord in each person's language (``core.i18n``), and the commands' localizations.

An interaction carries the person's client language (``interaction.locale``, e.g. ``es-ES``); a
message does not, so a message is answered in the person's ``/language`` where it has a catalog,
else English. discord.py runs each interaction's handler in a task of its own, so the language set
here holds for that person's handler only.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import discord
from discord import app_commands

from bots.discord_bot.people import person_of
from core import i18n

# The interaction whose language this task already speaks: a slash command's is set by the tree
# and asked again by ``guarded``; one read of the person's /language is enough.
_set_for: ContextVar[int | None] = ContextVar("iris_discord_language_for", default=None)


async def speak_their_language(interaction: discord.Interaction[Any]) -> None:
    """Speak the person's ``/language`` if it has a catalog, else their Discord client's language."""
    if _set_for.get() == interaction.id:
        return
    preference = await _preference(interaction.client, interaction.user)
    i18n.use(i18n.choose(preference, str(interaction.locale)))
    _set_for.set(interaction.id)


async def speak_to_author(client: discord.Client, author: discord.abc.User) -> None:
    """For a message, which says nothing of its author's client language: their ``/language`` or English."""
    i18n.use(await _preference(client, author))


async def _preference(client: discord.Client, user: discord.abc.User) -> str | None:
    service = getattr(client, "service", None)  # an IrisClient; typed loosely to avoid an import cycle
    if service is None:
        return None
    preference: str | None = await service.languages.preference(person_of(user))
    return preference


class LocalizedTree(app_commands.CommandTree[Any]):
    """The command tree: every slash command is answered in the language of who ran it."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        await speak_their_language(interaction)
        return True


class CatalogTranslator(app_commands.Translator):
    """The published commands' descriptions in every Discord locale that has a catalog.

    Names (of commands, options and choices) stay as they are: they are what people type and
    what ``/help`` and the docs show. A description without a translation gets none, and
    Discord shows the English one.
    """

    _KEPT = frozenset(
        {
            app_commands.TranslationContextLocation.command_name,
            app_commands.TranslationContextLocation.group_name,
            app_commands.TranslationContextLocation.parameter_name,
            app_commands.TranslationContextLocation.choice_name,
        }
    )

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        language = i18n.supported(locale.value)
        if context.location in self._KEPT or language in (None, i18n.DEFAULT):
            return None
        translated = i18n.translate(string.message, language)
        return translated if translated != string.message else None
