"""Admins reviewing corrections in Discord: the card, ✅ Approve, ❌ Reject and ✏️ Edit with its form.

Like every button (``bots.discord_bot.components``), each is a ``DynamicItem`` whose custom id
carries the correction's id, so a card posted before a restart still works.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bots.discord_bot.components import (
    ADMINS_ONLY,
    ALREADY_DECIDED,
    CORRECTION_GONE,
    ID,
    TEXT_INPUT_LIMIT,
    TOO_LONG_ID,
    Button,
    bot_of,
    guarded,
    is_admin,
    submitted,
    tell,
    tell_gone,
)
from bots.render import printable, review_card
from core.domain import Correction
from core.i18n import N_, _
from core.ports import AlreadyReviewed

# Discord's 2,000 characters a message, less room for the verdict line a card's last message gains.
CARD_LIMIT = 2000 - 120


def _clip(text: str, limit: int) -> str:
    text = discord.utils.escape_markdown(printable(text).strip())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _bold(text: str) -> str:
    return f"**{text}**"


def correction_card(correction: Correction) -> list[str]:
    """One correction as an admin sees it: all of its text, in messages within Discord's 2,000 characters."""
    return review_card(correction, CARD_LIMIT, bold=_bold, escape=discord.utils.escape_markdown)


class ReviewButton(
    discord.ui.DynamicItem[Button], template=rf"iris:review:(?P<verdict>approve|reject):(?P<correction>{ID})"
):
    """Approve or reject a pending correction (admins only)."""

    def __init__(self, correction_id: int, approve: bool) -> None:
        self.correction_id = correction_id
        self.approve = approve
        verdict = "approve" if approve else "reject"
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                label=_("Approve") if approve else _("Reject"),
                custom_id=f"iris:review:{verdict}:{correction_id}",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReviewButton:
        return cls(int(match["correction"]), match["verdict"] == "approve")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._review(interaction))

    async def _review(self, interaction: discord.Interaction[Any]) -> None:
        if not is_admin(interaction):
            await tell(interaction, _(ADMINS_ONLY))
            return
        await interaction.response.defer()
        reviewer = f"discord:{interaction.user.id}"
        try:
            correction = await bot_of(interaction).service.feedback.review(
                self.correction_id, self.approve, reviewer, pending_only=True
            )
        except AlreadyReviewed:
            # Decided meanwhile (by another admin, or with ✏️ Edit): the first decision stands.
            await tell(interaction, _(ALREADY_DECIDED).format(id=self.correction_id))
            return
        except LookupError:
            await interaction.edit_original_response(content=_(CORRECTION_GONE), view=None)
            return
        verdict = _("✅ Approved by {who}") if self.approve else _("❌ Rejected by {who}")
        last = correction_card(correction)[-1]  # the message the buttons were under
        who = _clip(interaction.user.display_name, 80)
        await interaction.edit_original_response(content=f"{last}\n{verdict.format(who=who)}", view=None)


EDIT_EMPTY = N_("The edited answer is empty, so nothing was approved.")
TOO_LONG_TO_EDIT = N_(
    "Correction #{id} is longer than a Discord form holds ({limit} characters): "
    "edit it with `iris review --approve {id} --text ...` in a terminal."
)


class EditReviewButton(discord.ui.DynamicItem[Button], template=rf"iris:review:edit:(?P<correction>{ID})"):
    """✏️ Edit opens a form holding the correction's text; submitting it approves what it holds."""

    def __init__(self, correction_id: int) -> None:
        self.correction_id = correction_id
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary,
                label=_("Edit"),
                emoji="✏️",
                custom_id=f"iris:review:edit:{correction_id}",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> EditReviewButton:
        return cls(int(match["correction"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._open(interaction))

    async def _open(self, interaction: discord.Interaction[Any]) -> None:
        if not is_admin(interaction):
            await tell(interaction, _(ADMINS_ONLY))
            return
        correction = await bot_of(interaction).service.feedback.pending_correction(self.correction_id)
        if correction is None:
            await tell(interaction, _(ALREADY_DECIDED).format(id=self.correction_id))
            return
        # What the card shows: without the hidden characters ``printable`` removes.
        text = printable(correction.text).strip()
        if len(text) > TEXT_INPUT_LIMIT:
            await tell(interaction, _(TOO_LONG_TO_EDIT).format(id=correction.id, limit=TEXT_INPUT_LIMIT))
            return
        form = ReviewEditModal(correction.id, text)
        form.stop()  # taken by ``take_review_form``, as the correction form is
        await interaction.response.send_modal(form)


# As for the correction form: the id is in the form's custom id, so a submit lands in any process.
REVIEW_FORM_ID = re.compile(rf"iris:review-form:(?P<correction>{ID})")
EDITED_ID = "edited"


class ReviewEditModal(discord.ui.Modal):
    """The form behind a card's ✏️ Edit, prefilled with the correction's text."""

    def __init__(self, correction_id: int, text: str) -> None:
        super().__init__(
            title=_("Edit correction #{id}").format(id=correction_id),
            custom_id=f"iris:review-form:{correction_id}",
        )
        self.edited: discord.ui.TextInput[Any] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph,
            default=text,
            max_length=TEXT_INPUT_LIMIT,
            custom_id=EDITED_ID,
        )
        self.add_item(discord.ui.Label(text=_("The answer as it should read"), component=self.edited))


async def take_review_form(interaction: discord.Interaction[Any]) -> None:
    """Approve a correction with the text of a submitted ✏️ Edit form (``IrisClient.on_interaction``)."""
    data: Any = interaction.data or {}
    custom_id = str(data.get("custom_id", ""))
    if interaction.type is not discord.InteractionType.modal_submit:
        return
    if re.fullmatch(f"iris:review-form:{TOO_LONG_ID}", custom_id):  # forged: no correction has that id
        await guarded(interaction, tell_gone(interaction, "review:edit", custom_id))
        return
    match = REVIEW_FORM_ID.fullmatch(custom_id)
    if match is None:
        return
    text = submitted(data.get("components", []), EDITED_ID)
    await guarded(interaction, _approve_edited(interaction, int(match["correction"]), text.strip()))


async def _approve_edited(interaction: discord.Interaction[Any], correction_id: int, text: str) -> None:
    if not is_admin(interaction):
        await tell(interaction, _(ADMINS_ONLY))
        return
    if not text:
        await tell(interaction, _(EDIT_EMPTY))
        return
    await interaction.response.defer()
    reviewer = f"discord:{interaction.user.id}"
    try:
        service = bot_of(interaction).service
        correction = await service.feedback.review(correction_id, True, reviewer, text, pending_only=True)
    except LookupError:  # decided meanwhile (AlreadyReviewed), or deleted
        await tell(interaction, _(ALREADY_DECIDED).format(id=correction_id))
        return
    who = _clip(interaction.user.display_name, 80)
    # The card the form came from loses its buttons; the approved text follows, whole.
    if interaction.message is not None:
        shown = interaction.message.content
        await interaction.edit_original_response(
            content=f"{shown}\n" + _("✏️ Edited by {who}; approved below.").format(who=who), view=None
        )
    *pieces, last = correction_card(correction)
    for piece in [*pieces, f"{last}\n" + _("✏️ Edited and ✅ approved by {who}").format(who=who)]:
        await tell(interaction, piece)


def review_view(correction_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ReviewButton(correction_id, approve=True))
    view.add_item(ReviewButton(correction_id, approve=False))
    view.add_item(EditReviewButton(correction_id))
    return view


DYNAMIC_ITEMS = (ReviewButton, EditReviewButton)
