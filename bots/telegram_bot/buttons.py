"""The inline buttons Iris puts under its messages, and what their callback data says.

Callback data is at most 64 bytes and comes back verbatim from any client, so
it carries only ids; who pressed is checked again when a press arrives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import InlineQueryLimit

from bots.render import printable
from core.choices import Pick, parse_pick
from core.domain import Correction
from core.i18n import _

# A reply's, an answer pair's or a correction's id, as a button carries it: at most 18 digits, so
# that any id a client sends back fits the database's 64-bit integers. Iris never makes a longer
# one; data with one is forged (``parse_forged``) and reaches no handler that looks it up.
ID = r"([0-9]{1,18})"
RATE_PATTERN = re.compile(rf"^rate:{ID}:(up|down)$")
FIX_PATTERN = re.compile(rf"^fix:{ID}$")
# A person's Telegram id (at most 52 bits), compared with the presser's, never looked up.
FORGET_PATTERN = re.compile(r"^forget:(\d+):(yes|no)$")
REVIEW_PATTERN = re.compile(rf"^review:{ID}:(approve|reject)$")
REVIEW_EDIT_PATTERN = re.compile(rf"^review:{ID}:edit$")
AGAIN_PATTERN = re.compile(rf"^again:{ID}$")
PICK_PATTERN = re.compile(rf"^pick:{ID}:(1|2|n)$")
# The same data with an id too long for the database: what a forged press sends.
FORGED_PATTERN = re.compile(
    r"^(?P<kind>rate|fix|again|pick|review):(?P<id>[0-9]{19,})"
    r"(?::(?P<action>up|down|1|2|n|approve|reject|edit))?$"
)


@dataclass(frozen=True)
class RatePress:
    turn_id: int
    up: bool


@dataclass(frozen=True)
class FixPress:
    turn_id: int


@dataclass(frozen=True)
class AgainPress:
    turn_id: int


@dataclass(frozen=True)
class PickPress:
    pair_id: int
    pick: Pick


@dataclass(frozen=True)
class ForgetPress:
    user_id: int
    confirmed: bool


@dataclass(frozen=True)
class ReviewPress:
    correction_id: int
    approve: bool


@dataclass(frozen=True)
class ForgedPress:
    """A press whose data has the shape of an Iris button's but an id no database row can have."""

    kind: str  # rate, fix, again, pick, review (✅ / ❌) or edit (a review's ✏️ Edit)
    forged_id: str  # the digits as sent: too many for an int the database holds


def rating_keyboard(turn_id: int, chosen: bool | None = None) -> InlineKeyboardMarkup:
    """👍 / 👎 / 🔁 / ✏️ under a finished reply; ``chosen`` marks the rating just given."""
    up = "👍 ✓" if chosen is True else "👍"
    down = "👎 ✓" if chosen is False else "👎"
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(up, callback_data=f"rate:{turn_id}:up"),
                InlineKeyboardButton(down, callback_data=f"rate:{turn_id}:down"),
                InlineKeyboardButton("🔁", callback_data=f"again:{turn_id}"),
            ],
            [InlineKeyboardButton(_("✏️ Suggest a better answer"), callback_data=f"fix:{turn_id}")],
        ]
    )


def choice_keyboard(pair_id: int, chosen: Pick | None = None) -> InlineKeyboardMarkup:
    """1 / 2 / Neither under the 🔁 pair; ``chosen`` marks the pick just made."""
    words = (("1", Pick.FIRST), ("2", Pick.SECOND), ("n", Pick.NEITHER))
    labels = {Pick.FIRST: "1", Pick.SECOND: "2", Pick.NEITHER: _("Neither")}
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    labels[pick] + (" ✓" if pick is chosen else ""), callback_data=f"pick:{pair_id}:{word}"
                )
                for word, pick in words
            ]
        ]
    )


def forget_keyboard(user_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(_("Delete everything"), callback_data=f"forget:{user_id}:yes"),
                InlineKeyboardButton(_("Keep it"), callback_data=f"forget:{user_id}:no"),
            ]
        ]
    )


def edit_query(correction_id: int, text: str) -> str:
    """What ✏️ Edit puts in the admin's input field after the bot's @name: "fix 42: <the text>"."""
    return f"fix {correction_id}: {text}"


def _fits_inline_query(query: str) -> bool:
    # Telegram caps an inline query at 256 characters (counted in UTF-16 units, as its clients do).
    return len(query.encode("utf-16-le")) // 2 <= InlineQueryLimit.MAX_QUERY_LENGTH


def review_keyboard(correction: Correction, inline_edit: bool) -> InlineKeyboardMarkup:
    """✅ Approve / ❌ Reject, and ✏️ Edit under a correction's card.

    Telegram cannot prefill a reply, so ✏️ Edit fills in the admin's input field
    (an inline-query button: "@bot fix 42: <the text>") where the bot has inline mode on
    (``inline_edit``) and the text fits an inline query; otherwise it asks for the edited
    text in a reply to a prompt that quotes the text to copy (``review:42:edit``).
    The text offered is the one the card shows, without hidden characters.
    """
    query = edit_query(correction.id, printable(correction.text).strip())
    if inline_edit and _fits_inline_query(query):
        edit = InlineKeyboardButton(_("✏️ Edit"), switch_inline_query_current_chat=query)
    else:
        edit = InlineKeyboardButton(_("✏️ Edit"), callback_data=f"review:{correction.id}:edit")
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(_("✅ Approve"), callback_data=f"review:{correction.id}:approve"),
                InlineKeyboardButton(_("❌ Reject"), callback_data=f"review:{correction.id}:reject"),
            ],
            [edit],
        ]
    )


def parse_rate(data: str) -> RatePress | None:
    match = RATE_PATTERN.match(data)
    return RatePress(int(match[1]), match[2] == "up") if match else None


def parse_fix(data: str) -> FixPress | None:
    match = FIX_PATTERN.match(data)
    return FixPress(int(match[1])) if match else None


def parse_forget(data: str) -> ForgetPress | None:
    match = FORGET_PATTERN.match(data)
    return ForgetPress(int(match[1]), match[2] == "yes") if match else None


def parse_review(data: str) -> ReviewPress | None:
    match = REVIEW_PATTERN.match(data)
    return ReviewPress(int(match[1]), match[2] == "approve") if match else None


def parse_review_edit(data: str) -> int | None:
    """The correction id of a ✏️ Edit press that asks for a reply."""
    match = REVIEW_EDIT_PATTERN.match(data)
    return int(match[1]) if match else None


def parse_again(data: str) -> AgainPress | None:
    match = AGAIN_PATTERN.match(data)
    return AgainPress(int(match[1])) if match else None


def parse_pick_press(data: str) -> PickPress | None:
    match = PICK_PATTERN.match(data)
    pick = parse_pick(match[2]) if match else None
    return PickPress(int(match[1]), pick) if match and pick else None


def parse_forged(data: str) -> ForgedPress | None:
    """The press, when ``data`` is an Iris button's with an id longer than any Iris makes."""
    match = FORGED_PATTERN.match(data)
    if match is None:
        return None
    kind = "edit" if match["action"] == "edit" else match["kind"]
    return ForgedPress(kind, match["id"])
