"""The slash commands: /help, /reset, /forget, /consent, /voice, /language; /stats, /ab, /review, /retrain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands

from bots.discord_bot.components import ADMINS_ONLY, allowed, forget_view, guarded, is_admin, tell
from bots.discord_bot.people import PLATFORM, channel_ids, person_of
from bots.discord_bot.persona_admin import add_persona_commands
from bots.discord_bot.replies import MESSAGE_LIMIT
from bots.discord_bot.review import correction_card, review_view
from bots.discord_bot.settings_menu import add_settings_command
from bots.render import format_ab, format_audit, format_stats, format_voice_choice
from bots.splitting import split_message
from core.access import REFUSAL
from core.admin import RetrainBusy
from core.domain import ChatRef
from core.i18n import N_, _

if TYPE_CHECKING:
    from bots.discord_bot.client import IrisClient

log = logging.getLogger(__name__)

HELP = N_(
    """\
**Iris** answers voice messages, audio files and text.
• In a server, mention me or reply to one of my messages; in DMs just write or record.
• I show what I heard, then my answer. Rate it with 👍 / 👎, or press ✏️ to write a better answer \
(an admin reviews it before I learn from it).
• `/reset` starts a new conversation · `/forget` deletes everything I stored about you.
• `/consent yes` lets your rated conversations teach future versions of me; `/consent no` keeps them out.
• `/voice on` sends my replies as voice messages too; `/voice off` keeps them to text.
• `/language de` (es, ru, …) sets the language I answer you in; `auto` detects it again; no code shows it.
• `/settings`: this channel's persona, spoken replies, reply length and earlier turns (admins; \
in your DM, you too where the admin allows it).
• Admins: `/stats`, `/ab`, `/review`, `/retrain`, `/audit` and `/persona`."""
)

CONSENT_YES = N_("Thank you: your rated conversations may now help train future versions of me.")
CONSENT_NO = N_("Understood: your conversations will not be used to train future versions of me.")

RESET_IN_CHAINS = N_("Here each reply chain is its own conversation: send a new message to start afresh.")

# How many pending corrections /review shows at once (each is its own message with buttons).
REVIEW_PAGE = 5
AUDIT_LINES = 30

Interaction = discord.Interaction[Any]


def add_commands(tree: app_commands.CommandTree[Any], bot: IrisClient) -> None:
    """Register the commands on the tree; ``IrisClient.setup_hook`` publishes them."""

    @tree.command(name="help", description=N_("What Iris does and how to use it"))
    async def help_command(interaction: Interaction) -> None:
        await interaction.response.send_message(_(HELP), ephemeral=True)

    @tree.command(
        name="reset", description=N_("Start a new conversation (I forget the context, not your data)")
    )
    async def reset_command(interaction: Interaction) -> None:
        await guarded(interaction, _reset(bot, interaction))

    @tree.command(name="forget", description=N_("Delete everything Iris has stored about you"))
    async def forget_command(interaction: Interaction) -> None:
        await interaction.response.send_message(
            _("This deletes your messages, my replies to them, your ratings and corrections. Sure?"),
            view=forget_view(interaction.user.id),
            ephemeral=True,
        )

    @tree.command(name="consent", description=N_("Whether your rated conversations may train future versions"))
    @app_commands.describe(answer=N_("yes: they may teach future versions; no: keep them out"))
    async def consent_command(interaction: Interaction, answer: Literal["yes", "no"]) -> None:
        await guarded(interaction, _consent(bot, interaction, answer == "yes"))

    @tree.command(name="voice", description=N_("My replies as voice messages too (on), or text only (off)"))
    @app_commands.describe(answer=N_("on: a voice message with each reply; off: text only"))
    async def voice_command(interaction: Interaction, answer: Literal["on", "off"]) -> None:
        await guarded(interaction, _voice(bot, interaction, answer == "on"))

    @tree.command(name="language", description=N_("The language I answer you in: de, es, ru… or auto"))
    @app_commands.describe(code=N_("an ISO 639-1 code such as de, es or ru; auto: detect it; empty: show it"))
    async def language_command(interaction: Interaction, code: str | None = None) -> None:
        await guarded(interaction, _language(bot, interaction, code or ""))

    @tree.command(name="stats", description=N_("Usage and ratings by model version (admins)"))
    async def stats_command(interaction: Interaction) -> None:
        await guarded(interaction, _stats(bot, interaction))

    @tree.command(name="ab", description=N_("The A/B test of a model version: ratings per arm (admins)"))
    async def ab_command(interaction: Interaction) -> None:
        await guarded(interaction, _ab(bot, interaction))

    @tree.command(name="review", description=N_("Approve or reject suggested answers (admins)"))
    async def review_command(interaction: Interaction) -> None:
        await guarded(interaction, _review(bot, interaction))

    @tree.command(
        name="audit", description=N_("The latest admin actions, consent changes and /forgets (admins)")
    )
    async def audit_command(interaction: Interaction) -> None:
        await guarded(interaction, _audit(bot, interaction))

    @tree.command(name="retrain", description=N_("Fine-tune a new model on the reviewed feedback (admins)"))
    async def retrain_command(interaction: Interaction) -> None:
        await guarded(interaction, _retrain(bot, interaction))

    add_settings_command(tree, bot)  # /settings (bots.discord_bot.settings_menu)

    add_persona_commands(tree, bot)  # /persona list|add|edit|default|remove|use


async def _reset(bot: IrisClient, interaction: Interaction) -> None:
    if not allowed(interaction):
        await tell(interaction, _(REFUSAL))
        return
    if bot.settings.discord_conversation == "reply_chain":
        await tell(interaction, _(RESET_IN_CHAINS))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    chat_id, thread_id = channel_ids(interaction.channel, interaction.channel_id)
    shared = bot.settings.shared_group_history and interaction.guild_id is not None
    had = await bot.service.privacy.reset(
        ChatRef(PLATFORM, chat_id, thread_id), person_of(interaction.user), shared
    )
    await tell(
        interaction, _("Started a new conversation.") if had else _("There was nothing to reset; just write.")
    )


async def _consent(bot: IrisClient, interaction: Interaction, consent: bool) -> None:
    if not allowed(interaction):
        await tell(interaction, _(REFUSAL))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    await bot.service.privacy.set_consent(person_of(interaction.user), consent)
    await tell(interaction, _(CONSENT_YES if consent else CONSENT_NO))


async def _voice(bot: IrisClient, interaction: Interaction, on: bool) -> None:
    if not allowed(interaction):
        await tell(interaction, _(REFUSAL))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    available = await bot.service.replies.set_voice(person_of(interaction.user), on)
    await tell(interaction, format_voice_choice(on, available))


async def _language(bot: IrisClient, interaction: Interaction, code: str) -> None:
    if not allowed(interaction):
        await tell(interaction, _(REFUSAL))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    await tell(interaction, await bot.service.languages.command(person_of(interaction.user), code))


async def _stats(bot: IrisClient, interaction: Interaction) -> None:
    if not is_admin(interaction):
        await tell(interaction, _(ADMINS_ONLY))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    await tell(interaction, format_stats(await bot.service.admin.stats()))


async def _ab(bot: IrisClient, interaction: Interaction) -> None:
    if not is_admin(interaction):
        await tell(interaction, _(ADMINS_ONLY))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    await tell(interaction, format_ab(await bot.service.admin.ab_status()))


async def _review(bot: IrisClient, interaction: Interaction) -> None:
    if not is_admin(interaction):
        await tell(interaction, _(ADMINS_ONLY))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    pending = await bot.service.feedback.pending_corrections()
    if not pending:
        await tell(interaction, _("No corrections are waiting for review."))
        return
    shown = pending[:REVIEW_PAGE]
    await tell(
        interaction,
        _("{count} waiting for review; the oldest {shown}:").format(count=len(pending), shown=len(shown)),
    )
    for correction in shown:
        # All of it, as approval takes all of it; the buttons go under the last piece.
        *pieces, last = correction_card(correction)
        for piece in pieces:
            await tell(interaction, piece)
        await tell(interaction, last, view=review_view(correction.id))


async def _retrain(bot: IrisClient, interaction: Interaction) -> None:
    if not is_admin(interaction):
        await tell(interaction, _(ADMINS_ONLY))
        return
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        await tell(interaction, _("I cannot post the result here; run /retrain in a channel or DM."))
        return
    await tell(interaction, _("Retraining started; I will post the result in this channel when it finishes."))
    # A run takes minutes to hours, longer than an interaction's 15-minute token lives,
    # so the result is posted to the channel rather than as a follow-up.
    actor = f"{PLATFORM}:{interaction.user.id}"
    bot.keep(asyncio.create_task(_retrain_and_report(bot, channel, actor), name="discord-retrain"))


async def _audit(bot: IrisClient, interaction: Interaction) -> None:
    if not is_admin(interaction):
        await tell(interaction, _(ADMINS_ONLY))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    entries = await bot.service.admin.audit_trail()
    for piece in split_message(format_audit(entries[-AUDIT_LINES:]), MESSAGE_LIMIT):
        await tell(interaction, piece)


async def _retrain_and_report(bot: IrisClient, channel: discord.abc.Messageable, actor: str) -> None:
    try:
        outcome = await bot.service.admin.retrain(actor=actor)
        text = outcome.summary
    except RetrainBusy:
        text = _("A retrain is already running; I did not start another.")
    except Exception:
        log.exception("retrain failed")
        text = _("The retrain failed; the logs say why. The model in use is unchanged.")
    with contextlib.suppress(discord.HTTPException):
        for piece in split_message(text, MESSAGE_LIMIT):
            await channel.send(piece)
