"""What admins change about personas, from a chat (``/persona``) or the terminal (``iris persona``).

One way in for both: the checks are ``core.personas``'s, the transactions the store's, and each
change writes the same audit line (who, the version and settings, never the prompt's words).
Adapters check that the caller is an admin before they call anything here but ``greeting``.

A voice is checked against the synthesizer in use when there is one (``voices``): an admin who
gives one it cannot say is told so, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.audit import AuditTrail
from core.domain import AuditAction, ChatRef
from core.personas import DEFAULT, Persona, PersonaInvalid, check_voice
from core.ports import PersonaStore

log = logging.getLogger(__name__)

# A voice -> why the synthesizer in use cannot say it, or None (blocking: it may run the synthesizer).
VoiceCheck = Callable[[str], str | None]

CLEAR = ("none", "-")  # what an admin types in a chat to take a voice or greeting away


class PersonaAdminUnavailable(RuntimeError):
    """This deployment stores no personas (a test or a console without a database)."""


@runtime_checkable
class PersonaAdminStore(PersonaStore, Protocol):
    """What administering personas needs of the store (``storage.personas.SqlPersonas``)."""

    def personas(self) -> list[Persona]: ...

    def add_persona(self, persona: Persona, by: str) -> Persona: ...

    def edit_persona(
        self,
        name: str,
        by: str,
        *,
        prompt: str | None = None,
        voice: str | None = None,
        temperature: float | None = None,
        greeting: str | None = None,
        default: bool = False,
    ) -> Persona: ...

    def remove_persona(self, name: str, by: str) -> list[ChatRef]: ...

    def set_chat_persona(self, chat: ChatRef, name: str | None, by: str) -> None: ...

    def chat_persona(self, chat: ChatRef) -> str | None: ...

    def default_persona(self) -> Persona | None: ...

    def chats(self) -> dict[str, list[ChatRef]]: ...


@dataclass(frozen=True)
class PersonaListing:
    """The stored personas by name, and the chats set to each."""

    personas: list[Persona]
    chats: dict[str, list[ChatRef]]


def details(persona: Persona) -> dict[str, object]:
    """An audit line's details: the version and settings, not the prompt's words."""
    return {
        "version": persona.version,
        "prompt_chars": len(persona.prompt),
        "voice": persona.voice,
        "temperature": persona.temperature,
        "greeting": persona.greeting is not None,
        "default": persona.is_default,
    }


def chat_key(chat: ChatRef) -> ChatRef:
    """A chat's persona is the chat's (a group's topics share it)."""
    return ChatRef(chat.platform, chat.chat_id)


def cleared(value: str | None) -> str | None:
    """A chat's way of saying "none" (``none``, ``-``) as the store's: "" takes the value away."""
    if value is not None and value.strip().casefold() in CLEAR:
        return ""
    return value


def temperature_of(text: str) -> float:
    """A temperature typed in a chat; ``PersonaInvalid`` for anything but a number (checked when stored)."""
    try:
        return float(text.strip())
    except ValueError:
        raise PersonaInvalid("a persona's temperature is a number from 0 to 2") from None


class PersonaAdmin:
    """Add, change, remove and choose personas; every call blocks nothing (the store runs in a thread)."""

    def __init__(self, store: PersonaStore | None, trail: AuditTrail, voices: VoiceCheck | None = None) -> None:
        self.store = store if isinstance(store, PersonaAdminStore) else None
        self.trail = trail
        self.voices = voices

    @property
    def available(self) -> bool:
        return self.store is not None

    def _store(self) -> PersonaAdminStore:
        if self.store is None:
            raise PersonaAdminUnavailable("personas are not stored on this deployment")
        return self.store

    async def listing(self) -> PersonaListing:
        store = self._store()

        def read() -> PersonaListing:
            return PersonaListing(store.personas(), store.chats())

        return await asyncio.to_thread(read)

    async def add(self, persona: Persona, actor: str) -> Persona:
        """Store a new persona (``PersonaInvalid``, ``PersonaRefused``: nothing stored)."""
        store = self._store()
        await self._check_voice(persona.voice)
        added = await asyncio.to_thread(store.add_persona, persona, actor)
        await self.trail.record(actor, AuditAction.PERSONA_ADD, added.name, details(added))
        return added

    async def edit(
        self,
        name: str,
        actor: str,
        *,
        prompt: str | None = None,
        voice: str | None = None,
        temperature: float | None = None,
        greeting: str | None = None,
        default: bool = False,
    ) -> Persona:
        """Change what is given (None keeps it; "" takes a voice or greeting away); a new prompt is
        the next version. ``PersonaInvalid``, ``PersonaNotFound``: nothing stored."""
        store = self._store()
        if (prompt, voice, temperature, greeting) == (None, None, None, None) and not default:
            raise PersonaInvalid("say what to change: the prompt, voice, temperature, greeting or default")
        await self._check_voice(voice)

        def edit() -> Persona:
            return store.edit_persona(
                name,
                actor,
                prompt=prompt,
                voice=voice,
                temperature=temperature,
                greeting=greeting,
                default=default,
            )

        edited = await asyncio.to_thread(edit)
        await self.trail.record(actor, AuditAction.PERSONA_EDIT, name, details(edited))
        return edited

    async def make_default(self, name: str, actor: str) -> Persona:
        """Make ``name`` the default persona (the previous default loses the mark)."""
        return await self.edit(name, actor, default=True)

    async def remove(self, name: str, actor: str) -> list[ChatRef]:
        """Delete a persona; the chats that used it, now back on the default (``PersonaRefused`` for the
        default itself, ``PersonaNotFound``)."""
        store = self._store()
        moved = await asyncio.to_thread(store.remove_persona, name, actor)
        chats = [f"{chat.platform}:{chat.chat_id}" for chat in moved]
        await self.trail.record(actor, AuditAction.PERSONA_REMOVE, name, {"chats": chats})
        return moved

    async def use(self, chat: ChatRef, name: str | None, actor: str) -> Persona | None:
        """Answer ``chat`` with persona ``name`` (None or "default": the default) from its next reply;
        the persona it now has (None: the configured prompt), whose greeting the chat is shown."""
        store = self._store()
        chosen = None if name is None or name.casefold() == DEFAULT else name
        chat = chat_key(chat)

        def use() -> Persona | None:
            store.set_chat_persona(chat, chosen, actor)
            return store.persona(chosen) if chosen is not None else store.default_persona()

        now = await asyncio.to_thread(use)
        target = f"{chat.platform}:{chat.chat_id}"
        await self.trail.record(actor, AuditAction.PERSONA_USE, target, {"persona": chosen or DEFAULT})
        return now

    async def of_chat(self, chat: ChatRef) -> Persona | None:
        """The persona that answers ``chat``: its own, else the default; None: the configured prompt."""
        store = self.store
        if store is None:
            return None
        chat = chat_key(chat)

        def read() -> Persona | None:
            name = store.chat_persona(chat)
            found = store.persona(name) if name is not None else None
            return found or store.default_persona()

        return await asyncio.to_thread(read)

    async def greeting(self, chat: ChatRef) -> str | None:
        """The greeting of the persona that answers ``chat`` (``/start``); None when it has none, or
        when it cannot be read (logged: the welcome goes out without it)."""
        try:
            persona = await self.of_chat(chat)
        except Exception:
            log.exception("could not read the persona of %s:%s", chat.platform, chat.chat_id)
            return None
        return persona.greeting if persona is not None else None

    async def _check_voice(self, voice: str | None) -> None:
        """``PersonaInvalid`` for a voice the synthesizer in use cannot say (none given: nothing to check)."""
        voice = check_voice(voice)
        if voice is None or self.voices is None:
            return
        problem = await asyncio.to_thread(self.voices, voice)
        if problem is not None:
            raise PersonaInvalid(problem)
