"""🔁 under a reply and the 1 / 2 / Neither buttons under the pair it brings (``core.choices``).

DynamicItems like the other buttons (``iris:again:<turn>``, ``iris:pick:<pair>:<1|2|n>``), so
they work after a restart and in any process. The press is answered at once (privately);
the pair is posted as a reply to the reply when the model has written it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import discord

from bots.discord_bot.components import GONE, ID, Button, allowed, bot_of, guarded, pressed_in, tell
from bots.discord_bot.people import person_of
from bots.discord_bot.replies import MESSAGE_LIMIT, reply_to, web_links_only
from bots.render import choice_card
from core.access import REFUSAL
from core.choices import FAILED, AgainRefused, AnswerPair, Pick, parse_pick
from core.feedback import FeedbackLimited, UnknownReply
from core.i18n import N_, _

log = logging.getLogger(__name__)

WRITING = N_("Writing another answer…")
LABELS = {Pick.FIRST: "1", Pick.SECOND: "2", Pick.NEITHER: N_("Neither")}
WORDS = {Pick.FIRST: "1", Pick.SECOND: "2", Pick.NEITHER: "n"}
_showing: set[asyncio.Task[None]] = set()  # kept, so none is collected half-way


class AgainButton(discord.ui.DynamicItem[Button], template=rf"iris:again:(?P<turn>{ID})"):
    """🔁: another answer to one reply, to pick the better of the two."""

    def __init__(self, turn_id: int) -> None:
        self.turn_id = turn_id
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary, emoji="🔁", custom_id=f"iris:again:{turn_id}"
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AgainButton:
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._again(interaction))

    async def _again(self, interaction: discord.Interaction[Any]) -> None:
        if not allowed(interaction):
            await tell(interaction, _(REFUSAL))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        service = bot_of(interaction).service
        try:
            writing = await service.again.ask(
                person_of(interaction.user), self.turn_id, pressed_in(interaction)
            )
        except UnknownReply:
            await tell(interaction, _(GONE))
            return
        except (FeedbackLimited, AgainRefused) as refused:
            await tell(interaction, str(refused))
            return
        await tell(interaction, _(WRITING))
        if interaction.message is not None:
            task = asyncio.create_task(_show(writing, interaction.message))
            _showing.add(task)
            task.add_done_callback(_showing.discard)


async def _show(writing: asyncio.Task[AnswerPair], under: discord.Message) -> None:
    try:
        try:
            pair = await writing
        except AgainRefused as refused:
            await reply_to(under, str(refused))
            return
        except Exception:
            log.exception("the second answer failed")
            await reply_to(under, _(FAILED))
            return
        await reply_to(under, choice_content(pair), pick_view(pair.id))
    except discord.HTTPException as error:
        log.warning("could not show a second answer: %s", error)


def choice_content(pair: AnswerPair) -> str:
    """The pair as one Discord message: web links only, as replies show them."""
    return choice_card(pair.first, pair.second or "", MESSAGE_LIMIT, web_links_only)


class PickButton(discord.ui.DynamicItem[Button], template=rf"iris:pick:(?P<pair>{ID}):(?P<pick>1|2|n)"):
    """1 / 2 / Neither under a pair; only the person who pressed 🔁 may pick."""

    def __init__(self, pair_id: int, pick: Pick, chosen: bool = False) -> None:
        self.pair_id = pair_id
        self.pick = pick
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.primary if chosen else discord.ButtonStyle.secondary,
                label=_(LABELS[pick]) + (" ✓" if chosen else ""),
                custom_id=f"iris:pick:{pair_id}:{WORDS[pick]}",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PickButton:
        return cls(int(match["pair"]), parse_pick(match["pick"]) or Pick.NEITHER)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self._pick(interaction))

    async def _pick(self, interaction: discord.Interaction[Any]) -> None:
        if not allowed(interaction):
            await tell(interaction, _(REFUSAL))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        service = bot_of(interaction).service
        try:
            said = await service.again.choose(
                person_of(interaction.user), self.pair_id, self.pick, pressed_in(interaction)
            )
        except (FeedbackLimited, AgainRefused) as refused:
            await tell(interaction, str(refused))
            return
        await tell(interaction, said)
        if interaction.message is not None:
            await interaction.message.edit(view=pick_view(self.pair_id, self.pick))


def pick_view(pair_id: int, chosen: Pick | None = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for pick in Pick:
        view.add_item(PickButton(pair_id, pick, chosen=pick is chosen))
    return view


DYNAMIC_ITEMS = (AgainButton, PickButton)
