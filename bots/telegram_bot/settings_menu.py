"""``/settings``: a chat's persona, spoken replies, reply length and earlier turns, as an inline keyboard.

Each press changes one setting (``core.chat_settings``) and edits the menu to show the values now,
✓ on each current choice. The chat a press changes is the chat of the menu's message, never a
value its data carries; the data (at most 64 bytes from any client) is checked whole, and data
that is forged, too long or no longer a choice (a persona removed since) gets the answer a stale
menu gets, with the menu shown afresh. Who may press is checked at each press.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import ContextTypes

from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.incoming import PLATFORM
from bots.telegram_bot.outbox import Target
from core.chat_settings import (
    HISTORY_CHOICES,
    SETTING_NAMES,
    ReplyLength,
    Setting,
    SettingInvalid,
    SettingsRefused,
    SettingsView,
    shown,
)
from core.domain import ChatRef
from core.i18n import N_, _, ngettext
from core.personas import DEFAULT
from core.speaking import VoiceMode

log = logging.getLogger(__name__)

SETTINGS_PATTERN = re.compile(r"^set:")  # every press on a settings menu, whatever else its data says
_PRESS = re.compile(r"^set:([pslt]):([A-Za-z0-9_-]{1,40})$")
_KEYS = {"p": Setting.PERSONA, "s": Setting.SPOKEN, "l": Setting.LENGTH, "t": Setting.HISTORY}
_LETTERS = {setting: key for key, setting in _KEYS.items()}
_ICONS = {Setting.PERSONA: "🎭", Setting.SPOKEN: "🔊", Setting.LENGTH: "📏", Setting.HISTORY: "🧵"}
MAX_PERSONAS_SHOWN = 23  # with "default", 8 rows of 3: the keyboard stays readable
PER_ROW = 3

TITLE = N_("Settings for this chat (each holds from the next reply):")
STALE = N_("That menu is out of date: here it is as it is now.")


@dataclass(frozen=True)
class SettingsPress:
    setting: Setting
    value: str


def parse_press(data: str) -> SettingsPress | None:
    """A menu press's setting and value, or None for data no menu carries."""
    found = _PRESS.fullmatch(data)
    return SettingsPress(_KEYS[found.group(1)], found.group(2)) if found else None


def menu_text(view: SettingsView) -> str:
    lines = [_(TITLE), *view.lines()]
    hidden = len(view.personas) - MAX_PERSONAS_SHOWN
    if hidden > 0:
        lines.append(
            ngettext(
                "({count} more persona: an admin sets it with `iris persona use`.)",
                "({count} more personas: an admin sets them with `iris persona use`.)",
                hidden,
            ).format(count=hidden)
        )
    return "\n".join(lines)


def menu_keyboard(view: SettingsView) -> InlineKeyboardMarkup:
    """A row (or rows) of choices per setting, "default" first, ✓ on each current one."""
    choices: dict[Setting, list[str]] = {
        Setting.PERSONA: view.personas[:MAX_PERSONAS_SHOWN],
        Setting.SPOKEN: [mode.value for mode in VoiceMode],
        Setting.LENGTH: [length.value for length in ReplyLength],
        Setting.HISTORY: [str(turns) for turns in HISTORY_CHOICES],
    }
    rows: list[list[InlineKeyboardButton]] = []
    for setting, values in choices.items():
        current = shown(view.settings.value(setting))
        buttons = [
            InlineKeyboardButton(
                f"{_ICONS[setting]} {value}{' ✓' if value == current else ''}",
                callback_data=f"set:{_LETTERS[setting]}:{value}",
            )
            for value in [DEFAULT, *values]
        ]
        per_row = PER_ROW if setting is Setting.PERSONA else len(buttons)
        rows += [buttons[start : start + per_row] for start in range(0, len(buttons), per_row)]
    return InlineKeyboardMarkup(rows)


def _chat(message: Message) -> ChatRef:
    return ChatRef(PLATFORM, str(message.chat.id))  # one set of settings per chat, topics included


class SettingsMenu:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def on_settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The menu, for those who may change the chat's settings; one line for anyone else."""
        message = update.effective_message
        if message is None or not await self.adapter.admitted(update):
            return
        book, target = self.adapter.service.chat_settings, self.adapter.target(message)
        private = not self.adapter.is_group(message)
        if not book.may_change(admin=self.adapter.is_admin(update), private=private):
            await self.adapter.outbox.send(target, plain_text(book.refusal()))
            return
        view = await book.view(_chat(message))
        await self.adapter.outbox.send(target, plain_text(menu_text(view)), menu_keyboard(view))

    async def on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        outbox = self.adapter.outbox
        message = query.message if isinstance(query.message, Message) else None
        press = parse_press(query.data or "")
        if message is None:  # too old for Telegram to show: nothing to edit
            await outbox.answer(query.id, _(STALE))
            return
        if not await self.adapter.admitted(update):
            return
        book, chat = self.adapter.service.chat_settings, _chat(message)
        private = not self.adapter.is_group(message)
        actor = f"{PLATFORM}:{query.from_user.id}"
        try:
            if press is None:
                raise SettingInvalid("not a menu's data")
            view = await book.change(
                chat, press.setting, press.value, actor, admin=self.adapter.is_admin(update), private=private
            )
            answer = _("Saved. {setting}: {value}").format(
                setting=_(SETTING_NAMES[press.setting]), value=press.value
            )
        except SettingsRefused as refused:
            await outbox.answer(query.id, str(refused), alert=True)
            return
        except SettingInvalid:
            data = (query.data or "")[:80]
            log.info("a settings press in chat %s held data no menu has: %r", chat.chat_id, data)
            view, answer = await book.view(chat), _(STALE)
        await outbox.answer(query.id, answer)
        await outbox.edit(message.chat.id, message.message_id, plain_text(menu_text(view)), menu_keyboard(view))
        if press is not None and press.setting is Setting.PERSONA and answer != _(STALE):
            # As `/persona use` does: the persona the chat now has says hello, if it has a greeting.
            greeting = await self.adapter.service.personas.greeting(chat)
            if greeting:
                thread = message.message_thread_id if message.is_topic_message else None
                await outbox.send(Target(message.chat.id, thread), plain_text(greeting))
