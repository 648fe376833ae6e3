"""The buttons and the form under the bot's messages, and what every button shares.

Every button is a discord.py ``DynamicItem``: what it acts on (a reply's turn
id, a correction id, a person) lives in its custom id, and the classes are
registered at start-up, so buttons on old messages keep working after a restart.
Here: 👍 / 👎 and ✏️ under a reply, /forget's confirmation, and the answer to a forged id;
the review cards' buttons are in ``bots.discord_bot.review``, 🔁 and its pick in
``bots.discord_bot.choices``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

import discord

from bots.discord_bot.language import speak_their_language
from bots.discord_bot.people import PLATFORM, channel_ids, may_use, person_of
from bots.render import format_forget
from core.access import REFUSAL
from core.choices import UNKNOWN as PAIR_GONE
from core.domain import ChatRef, RatingOutcome
from core.feedback import FeedbackLimited, UnknownReply
from core.i18n import N_, _

if TYPE_CHECKING:
    from bots.discord_bot.client import IrisClient

log = logging.getLogger(__name__)

SORRY = N_("Sorry, something went wrong on my side. Please try again.")
GONE = N_("That reply is no longer stored, so it cannot be rated or corrected.")
ADMINS_ONLY = N_("Only the bot's admins can do that.")
# What a press on a review card says when its correction was decided or deleted (also a forged id's).
ALREADY_DECIDED = N_("Correction #{id} was already reviewed, or no longer exists; nothing changed.")
CORRECTION_GONE = N_("That correction no longer exists.")
RATED = {
    RatingOutcome.CREATED: N_("Thanks for the {emoji}!"),
    RatingOutcome.CHANGED: N_("Changed your rating to {emoji}."),
    RatingOutcome.UNCHANGED: N_("You already gave this reply a {emoji}."),
}
# Discord's limit on a text input's value.
TEXT_INPUT_LIMIT = 4000
SAVED = N_("Thanks! Your answer is saved; an admin reviews it before I learn from it.")

Button = discord.ui.Button[Any]

# A reply's, an answer pair's or a correction's id in a custom id: at most 18 digits, so that any
# id a client sends back fits the database's 64-bit integers. Iris never makes a longer one; a
# custom id with one is forged, and ``ForgedButton`` answers it as a deleted one is answered.
ID = "[0-9]{1,18}"
TOO_LONG_ID = "[0-9]{19,}"


def bot_of(interaction: discord.Interaction[Any]) -> IrisClient:
    return cast("IrisClient", interaction.client)


def allowed(interaction: discord.Interaction[Any]) -> bool:
    """Whether the person pressing may use the bot here (the same allowlists as for messages)."""
    policy = bot_of(interaction).settings.access
    return may_use(policy, interaction.user, interaction.channel, interaction.channel_id)


def pressed_in(interaction: discord.Interaction[Any]) -> ChatRef:
    """The chat a button or form was used in, as Discord says (a custom id comes from the client)."""
    chat_id, _thread = channel_ids(interaction.channel, interaction.channel_id)
    return ChatRef(PLATFORM, chat_id)


def is_admin(interaction: discord.Interaction[Any]) -> bool:
    return bot_of(interaction).settings.access.is_admin(str(interaction.user.id))


async def tell(interaction: discord.Interaction[Any], text: str, view: discord.ui.View | None = None) -> None:
    """Answer the person privately: as the first response, or as a follow-up after a defer."""
    if interaction.response.is_done():
        if view is None:
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.followup.send(text, ephemeral=True, view=view)
    elif view is None:
        await interaction.response.send_message(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True, view=view)


async def guarded(interaction: discord.Interaction[Any], work: Awaitable[None]) -> None:
    """Run an interaction's work; a failure is logged and the person told, never shown a traceback."""
    try:
        await speak_their_language(interaction)
        await work
    except Exception:
        log.exception("interaction %s failed", interaction.id)
        with contextlib.suppress(discord.HTTPException):
            await tell(interaction, _(SORRY))


# --- feedback on a reply --------------------------------------------------------


class RateButton(discord.ui.DynamicItem[Button], template=rf"iris:rate:(?P<vote>up|down):(?P<turn>{ID})"):
    """👍 or 👎 on one reply; a second press by the same person changes their rating."""

    def __init__(self, turn_id: int, up: bool) -> None:
        self.turn_id = turn_id
        self.up = up
        vote = "up" if up else "down"
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary, emoji=self.emoji, custom_id=f"iris:rate:{vote}:{turn_id}"
            )
        )

    @property
    def emoji(self) -> str:
        return "👍" if self.up else "👎"

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RateButton:
        return cls(int(match["turn"]), match["vote"] == "up")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._rate(interaction))

    async def _rate(self, interaction: discord.Interaction[Any]) -> None:
        if not allowed(interaction):
            await tell(interaction, _(REFUSAL))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            outcome = await bot_of(interaction).service.feedback.rate(
                person_of(interaction.user), self.turn_id, self.up, pressed_in(interaction)
            )
        except UnknownReply:
            await tell(interaction, _(GONE))
            return
        except FeedbackLimited as limited:
            await tell(interaction, str(limited))
            return
        await tell(interaction, _(RATED[outcome]).format(emoji=self.emoji))


class FixButton(discord.ui.DynamicItem[Button], template=rf"iris:fix:(?P<turn>{ID})"):
    """✏️ opens a form for the answer the person expected."""

    def __init__(self, turn_id: int) -> None:
        self.turn_id = turn_id
        super().__init__(
            discord.ui.Button(style=discord.ButtonStyle.secondary, emoji="✏️", custom_id=f"iris:fix:{turn_id}")
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> FixButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._open(interaction))

    async def _open(self, interaction: discord.Interaction[Any]) -> None:
        if not allowed(interaction):
            await tell(interaction, _(REFUSAL))
            return
        form = CorrectionModal(self.turn_id)
        # Not kept in discord.py's store (a stopped form is not stored): every submit, before a
        # restart or after, or in another process, is taken by ``take_correction_form``.
        form.stop()
        # A modal must be the first response: it cannot follow a defer.
        await interaction.response.send_modal(form)


# The correction form's custom id carries the reply's turn id, so that a form opened before a
# restart (or by another process) still lands: discord.py drops a submit whose Modal it does not hold.
FORM_ID = re.compile(rf"iris:fix-form:(?P<turn>{ID})")
ANSWER_ID = "answer"


class CorrectionModal(discord.ui.Modal):
    """The form behind ✏️; what is written is stored as a correction waiting for review."""

    def __init__(self, turn_id: int) -> None:
        super().__init__(title=_("Suggest a better answer"), custom_id=f"iris:fix-form:{turn_id}")
        self.turn_id = turn_id
        self.answer: discord.ui.TextInput[Any] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph,
            placeholder=_("The answer you expected"),
            max_length=TEXT_INPUT_LIMIT,
            custom_id=ANSWER_ID,
        )
        self.add_item(discord.ui.Label(text=_("What should I have said?"), component=self.answer))


async def take_correction_form(interaction: discord.Interaction[Any]) -> None:
    """Store a submitted correction form, whichever process opened it and whenever.

    Called for every interaction (``IrisClient.on_interaction``); anything else is left alone.
    """
    data: Any = interaction.data or {}
    custom_id = str(data.get("custom_id", ""))
    if interaction.type is not discord.InteractionType.modal_submit:
        return
    if re.fullmatch(f"iris:fix-form:{TOO_LONG_ID}", custom_id):  # forged: no reply has that id
        await guarded(interaction, tell_gone(interaction, "fix", custom_id))
        return
    match = FORM_ID.fullmatch(custom_id)
    if match is None:
        return
    text = submitted(data.get("components", []))
    await guarded(interaction, _save_correction(interaction, int(match["turn"]), text))


def submitted(components: list[Any], input_id: str = ANSWER_ID) -> str:
    """A text input's value in a submitted form (a text input sits in a label or an action row)."""
    for component in components:
        if component.get("custom_id") == input_id:
            return str(component.get("value") or "")
        inside = list(component.get("components") or [])
        if isinstance(component.get("component"), dict):
            inside.append(component["component"])
        found = submitted(inside, input_id)
        if found:
            return found
    return ""


async def _save_correction(interaction: discord.Interaction[Any], turn_id: int, text: str) -> None:
    if not allowed(interaction):
        await tell(interaction, _(REFUSAL))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        service = bot_of(interaction).service
        await service.feedback.correct(person_of(interaction.user), turn_id, text, pressed_in(interaction))
    except UnknownReply:
        await tell(interaction, _(GONE))
        return
    except FeedbackLimited as limited:
        await tell(interaction, str(limited))
        return
    except ValueError:
        await tell(interaction, _("A correction needs some text."))
        return
    await tell(interaction, _(SAVED))


def feedback_view(turn_id: int) -> discord.ui.View:
    from bots.discord_bot.choices import AgainButton  # it builds on this module's helpers

    view = discord.ui.View(timeout=None)
    view.add_item(RateButton(turn_id, up=True))
    view.add_item(RateButton(turn_id, up=False))
    view.add_item(AgainButton(turn_id))
    view.add_item(FixButton(turn_id))
    return view


# --- forged ids -------------------------------------------------------------------


# The buttons' custom ids (``iris:again:…`` and ``iris:pick:…`` are ``choices``'s) with a longer id.
FORGED_ID = (
    r"iris:(?P<kind>rate:(?:up|down)|fix|again|pick|review:(?:approve|reject|edit))"
    rf":(?P<id>{TOO_LONG_ID})(?::[12n])?"
)


class ForgedButton(discord.ui.DynamicItem[Button], template=FORGED_ID):
    """A press on an Iris custom id whose id is too long for the database: forged, since Iris makes none.

    Answered as a press on a deleted reply, pair or correction is (after the same checks of who
    pressed), so that the id never reaches the database and the client stops waiting.
    """

    def __init__(self, kind: str, forged_id: str) -> None:
        self.kind = kind
        super().__init__(discord.ui.Button(label="forged", custom_id=f"iris:{kind}:{forged_id}"))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ForgedButton:
        return cls(match["kind"], match["id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        data: Any = interaction.data or {}
        await guarded(interaction, tell_gone(interaction, self.kind, str(data.get("custom_id", ""))))


async def tell_gone(interaction: discord.Interaction[Any], kind: str, custom_id: str) -> None:
    """What a press (or form) on a deleted reply, pair or correction of this ``kind`` is told."""
    if kind.startswith("review:"):
        if not is_admin(interaction):
            text = _(ADMINS_ONLY)
        elif kind == "review:edit":
            text = _(ALREADY_DECIDED).format(id=custom_id.rsplit(":", 1)[-1])
        else:
            text = _(CORRECTION_GONE)
    elif not allowed(interaction):
        text = _(REFUSAL)
    else:
        text = _(PAIR_GONE) if kind == "pick" else _(GONE)
    await tell(interaction, text)


# --- /forget ----------------------------------------------------------------------


class ForgetButton(discord.ui.DynamicItem[Button], template=r"iris:forget:(?P<answer>yes|no):(?P<user>[0-9]+)"):
    """The confirmation of /forget; only the person who asked can press it."""

    def __init__(self, user_id: int, confirm: bool) -> None:
        self.user_id = user_id
        self.confirm = confirm
        answer = "yes" if confirm else "no"
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.danger if confirm else discord.ButtonStyle.secondary,
                label=_("Delete everything") if confirm else _("Keep it"),
                custom_id=f"iris:forget:{answer}:{user_id}",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ForgetButton:
        return cls(int(match["user"]), match["answer"] == "yes")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._answer(interaction))

    async def _answer(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.user.id != self.user_id:
            await tell(interaction, _("This button belongs to someone else's /forget."))
            return
        if not self.confirm:
            await interaction.response.edit_message(content=_("Nothing was deleted."), view=None)
            return
        await interaction.response.defer()
        report = await bot_of(interaction).service.privacy.forget(person_of(interaction.user))
        await interaction.edit_original_response(content=format_forget(report), view=None)


def forget_view(user_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ForgetButton(user_id, confirm=True))
    view.add_item(ForgetButton(user_id, confirm=False))
    return view


DYNAMIC_ITEMS = (RateButton, FixButton, ForgetButton, ForgedButton)
