"""Each chat's settings (issue #29): its persona, spoken replies, reply length and earlier turns.

An admin sets any chat's (``/settings`` in Telegram and Discord); in a private chat the person
sets their own where the deployment allows it (``IRIS_SETTINGS_SELF``). Unset (None, NULL in
the database) means the deployment's setting. The reply path reads them from the database
before every reply, so a change holds from the next reply in every process, with no restart.

| setting | values | unset: the deployment's |
| --- | --- | --- |
| persona | a stored persona's name | the default persona (``core.personas``) |
| spoken replies | off, mirror, always | ``IRIS_TTS_REPLIES`` and each person's ``/voice`` |
| reply length | short, normal, long | normal |
| earlier turns | 0 to 40 | ``IRIS_CHAT_HISTORY_TURNS`` |

A chat's spoken replies, when set, win over a person's own ``/voice on|off`` in that chat.
A reply length sets the reply's token limit from ``IRIS_GENERATION_MAX_TOKENS`` (short: a
quarter, normal: all of it, long: twice, within half the model's context) and adds one line
to the system prompt (``LENGTH_LINES``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from core.domain import AuditAction, ChatRef
from core.i18n import N_, _
from core.personas import DEFAULT, Persona, PersonaInvalid, PersonaNotFound, check_name
from core.speaking import VoiceMode

if TYPE_CHECKING:
    from core.ports import AuditLog, ChatSettingsStore, Generation

log = logging.getLogger(__name__)

MAX_HISTORY_TURNS = 40  # a turn is one message: a person's or a reply
HISTORY_CHOICES = (0, 4, 10, 20, 40)  # what the menus offer
MIN_SHORT_TOKENS = 16

E = TypeVar("E", bound=enum.StrEnum)


class ReplyLength(enum.StrEnum):
    SHORT = "short"
    NORMAL = "normal"
    LONG = "long"


# The line each length adds to the system prompt (normal: none, the prompt as it is).
LENGTH_LINES = {
    ReplyLength.SHORT: "Keep your answer short: one or two sentences.",
    ReplyLength.LONG: "Answer in full, with details and examples where they help.",
}


class Setting(enum.StrEnum):
    """A chat's setting, named as its column and the audit trail name it."""

    PERSONA = "persona"
    SPOKEN = "spoken_replies"
    LENGTH = "reply_length"
    HISTORY = "history_turns"


# How a change is named to the person who made it ("Saved. reply length: short"); translated where shown.
SETTING_NAMES = {
    Setting.PERSONA: N_("persona"),
    Setting.SPOKEN: N_("spoken replies"),
    Setting.LENGTH: N_("reply length"),
    Setting.HISTORY: N_("history turns"),
}


class SettingInvalid(ValueError):
    """A value no setting takes (a forged press, a stale menu); ``str(error)`` is one line, safe to show."""


class SettingsRefused(PermissionError):
    """The person may not change this chat's settings; ``str(error)`` is one line, safe to show."""


Value = str | int | None  # as stored: a persona's name, a mode, a length, a count; None: the deployment's


@dataclass(frozen=True)
class ChatSettings:
    """What is set for one chat; None: the deployment's setting."""

    persona: str | None = None
    spoken: VoiceMode | None = None
    length: ReplyLength | None = None
    history_turns: int | None = None

    def value(self, setting: Setting) -> Value:
        return {
            Setting.PERSONA: self.persona,
            Setting.SPOKEN: self.spoken,
            Setting.LENGTH: self.length,
            Setting.HISTORY: self.history_turns,
        }[setting]

    def history(self, configured: int) -> int:
        """How many earlier turns go into the prompt."""
        return configured if self.history_turns is None else self.history_turns

    def shape(self, prompt: str, options: Generation, context_tokens: int) -> tuple[str, Generation]:
        """The system prompt and sampling options of a reply written with this chat's length."""
        if self.length is None or self.length is ReplyLength.NORMAL:
            return prompt, options
        line = LENGTH_LINES[self.length]
        prompt = f"{prompt}\n\n{line}" if prompt else line
        return prompt, replace(
            options, max_tokens=length_tokens(self.length, options.max_tokens, context_tokens)
        )


def length_tokens(length: ReplyLength | None, configured: int, context_tokens: int) -> int:
    """A reply's token limit for ``length``, from the deployment's (``IRIS_GENERATION_MAX_TOKENS``)."""
    if length is ReplyLength.SHORT:
        return min(configured, max(MIN_SHORT_TOKENS, configured // 4))
    if length is ReplyLength.LONG:
        return max(configured, min(2 * configured, context_tokens // 2))
    return configured


def parse(setting: Setting, text: str) -> Value:
    """The stored value of ``text`` for ``setting`` ("default": None); ``SettingInvalid`` otherwise.

    A persona's name is checked against the stored personas when it is stored, not here.
    """
    text = text.strip()
    if text.casefold() == DEFAULT:
        return None
    if setting is Setting.PERSONA:
        try:
            return check_name(text)
        except PersonaInvalid:
            raise SettingInvalid(_("no such persona")) from None
    if setting is Setting.SPOKEN:
        return _member(VoiceMode, text, _("spoken replies are off, mirror or always"))
    if setting is Setting.LENGTH:
        return _member(ReplyLength, text, _("a reply length is short, normal or long"))
    if not text.isascii() or not text.isdigit() or len(text) > 3 or int(text) > MAX_HISTORY_TURNS:
        raise SettingInvalid(_("earlier turns are a number from 0 to {most}").format(most=MAX_HISTORY_TURNS))
    return int(text)


def _member(kind: type[E], text: str, problem: str) -> E:
    try:
        return kind(text.casefold())
    except ValueError:
        raise SettingInvalid(problem) from None


def shown(value: Value) -> str:
    """A setting's value as the menus show it."""
    return DEFAULT if value is None else str(value)


@dataclass(frozen=True)
class SettingsView:
    """What a menu shows: the chat's settings, the deployment's, and the personas to choose from."""

    chat: ChatRef
    settings: ChatSettings
    deployment: ChatSettings
    personas: list[str] = field(default_factory=list)  # stored personas, by name

    def lines(self) -> list[str]:
        """One line per setting: its value, or "default" with the deployment's in brackets."""
        labels = {
            Setting.PERSONA: _("🎭 Persona"),
            Setting.SPOKEN: _("🔊 Spoken replies"),
            Setting.LENGTH: _("📏 Reply length"),
            Setting.HISTORY: _("🧵 Earlier turns"),
        }
        lines = []
        for setting, label in labels.items():
            value = self.settings.value(setting)
            if value is None:
                fallback = self.deployment.value(setting)
                value = _("default ({value})").format(
                    value=shown(fallback) if fallback is not None else _("the configured prompt")
                )
            lines.append(f"{label}: {value}")
        return lines


class ChatSettingsBook:
    """Reads each chat's settings for the reply path, and changes them for admins (and people in
    their private chat, where allowed), each change in the audit trail.

    ``store`` None: every chat has the deployment's settings and none can be changed.
    """

    def __init__(
        self, store: ChatSettingsStore | None, audit: AuditLog | None = None, self_service: bool = True
    ) -> None:
        self.store = store
        self.audit = audit
        self.self_service = self_service  # IRIS_SETTINGS_SELF: a person may set their private chat's
        # The deployment's settings, as the menus show them (``ChatService`` tells the book).
        self.deployment: Callable[[], ChatSettings] = ChatSettings

    async def for_conversation(self, conversation_id: int) -> ChatSettings:
        """The settings of the conversation's chat; a failing read: the deployment's (logged)."""
        if self.store is None:
            return ChatSettings()
        try:
            return await asyncio.to_thread(self.store.conversation_settings, conversation_id)
        except Exception:
            log.exception(
                "could not read the settings of conversation %s; the deployment's apply", conversation_id
            )
            return ChatSettings()

    def may_change(self, *, admin: bool, private: bool) -> bool:
        """Admins change any chat's settings; a person their private chat's, where the deployment allows."""
        return self.store is not None and (admin or (private and self.self_service))

    def refusal(self) -> str:
        """Why ``may_change`` said no, in one line."""
        if self.store is None:
            return _("Chat settings are not available here.")
        return _("Only an admin can change this chat's settings.")

    async def view(self, chat: ChatRef) -> SettingsView:
        """The chat's settings as a menu shows them (blocking reads, off the event loop)."""
        chat = ChatRef(chat.platform, chat.chat_id)  # one set of settings per chat, for all its threads
        if self.store is None:
            return SettingsView(chat, ChatSettings(), self.deployment())
        store = self.store

        def read() -> tuple[ChatSettings, list[Persona]]:
            return store.chat_settings(chat), store.personas()

        settings, personas = await asyncio.to_thread(read)
        deployment = self.deployment()
        default = next((persona.name for persona in personas if persona.is_default), None)
        return SettingsView(
            chat, settings, replace(deployment, persona=default), [p.name or "" for p in personas]
        )

    async def change(
        self, chat: ChatRef, setting: Setting, text: str, actor: str, *, admin: bool, private: bool
    ) -> SettingsView:
        """Set one of ``chat``'s settings from a menu's ``text``; the menu as it is now.

        ``SettingsRefused`` when ``actor`` may not; ``SettingInvalid`` for a value no setting takes
        or a persona no longer stored (nothing changes, nothing is recorded).
        """
        if not self.may_change(admin=admin, private=private):
            raise SettingsRefused(self.refusal())
        assert self.store is not None
        value = parse(setting, text)
        chat = ChatRef(chat.platform, chat.chat_id)
        try:
            await asyncio.to_thread(self.store.set_chat_setting, chat, setting, value, actor)
        except PersonaNotFound:
            raise SettingInvalid(_("no such persona")) from None
        await self._audit(chat, setting, value, actor)
        return await self.view(chat)

    async def _audit(self, chat: ChatRef, setting: Setting, value: Value, actor: str) -> None:
        if self.audit is None:
            return
        target = f"{chat.platform}:{chat.chat_id}"
        if setting is Setting.PERSONA:  # as `iris persona use` records it
            action, details = AuditAction.PERSONA_USE, {"persona": shown(value)}
        else:
            action, details = AuditAction.SETTINGS_CHANGE, {"setting": setting.value, "value": shown(value)}
        try:
            await asyncio.to_thread(self.audit.record_audit, actor, action, target, dict(details))
        except Exception:
            log.exception("could not write %s by %s to the audit trail", action.value, actor)
