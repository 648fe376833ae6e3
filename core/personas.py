"""Personas: named system prompts that owners add, change and choose per chat while Iris runs.

A persona is a name, the system prompt replies are written with, and optionally a voice, a
sampling temperature and a greeting. One stored persona may be the default; a chat an admin set
(``iris persona use``) gets its own. With no default stored, the configured
``IRIS_CHAT_SYSTEM_PROMPT`` answers (``PersonaBook.configured``), so a deployment that never
adds a persona behaves as before.

The writer asks ``PersonaBook`` before each reply: the persona is read from the database every
time, so a change made by any process (or the command line) holds from the next reply, with no
restart. The book also loads the personas file (``IRIS_PERSONAS_FILE``, TOML) into the database
when it changes; a broken file is logged once and the last good personas stay.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.domain import AuditAction

if TYPE_CHECKING:
    from core.ports import AuditLog, Generation, PersonaStore

log = logging.getLogger(__name__)

DEFAULT = "default"  # the word for "the default persona" (``iris persona use ... default``); no persona's name
MAX_NAME_CHARS = 40
MAX_PROMPT_CHARS = 4000  # a system prompt is spent on every reply's context: keep room for the chat
MAX_GREETING_CHARS = 1000
MAX_VOICE_CHARS = 64
MAX_TEMPERATURE = 2.0
CHECK_FILE_EVERY_S = 2.0  # the personas file is looked at no more often than this
FILE_ACTOR = "personas-file"  # who the audit trail names for a change the personas file made

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters other than tab and newline
_FILE_KEYS = {"prompt", "voice", "temperature", "greeting", "default"}


class PersonaInvalid(ValueError):
    """A persona that is not stored as given; ``str(error)`` is one line, safe to show."""


class PersonaNotFound(LookupError):
    """No persona of that name is stored; ``str(error)`` is one line, safe to show."""


class PersonaRefused(ValueError):
    """A change the rules refuse (removing the default, adding a name twice); one line, safe to show."""


@dataclass(frozen=True)
class Persona:
    """A persona as stored (or, with ``name`` None, the configured prompt standing in for one)."""

    name: str | None  # None: IRIS_CHAT_SYSTEM_PROMPT, no persona stored as the default
    prompt: str
    version: int = 0  # goes up each time the prompt changes; 0 for the configured prompt
    voice: str | None = None  # its spoken replies' voice (core.speaking); None: IRIS_TTS_*'s
    temperature: float | None = None  # None: IRIS_GENERATION_TEMPERATURE
    greeting: str | None = None  # what /start and a switch to it show in the chat
    is_default: bool = False

    @property
    def recorded(self) -> tuple[str, int] | None:
        """What a reply stores of the persona that wrote it: its name and prompt version."""
        return (self.name, self.version) if self.name is not None else None

    def options(self, generation: Generation) -> Generation:
        """The deployment's sampling knobs with this persona's temperature, if it has one."""
        return generation if self.temperature is None else replace(generation, temperature=self.temperature)


# --- what admins and the file may give -------------------------------------------------------


def check_name(name: str) -> str:
    """``name`` if it can name a persona: letters, digits, ``-`` and ``_``, at most 40, not "default"."""
    if not name:
        raise PersonaInvalid("a persona needs a name")
    if len(name) > MAX_NAME_CHARS:
        raise PersonaInvalid(f"a persona's name has at most {MAX_NAME_CHARS} characters ({len(name)} given)")
    if not _NAME.fullmatch(name):
        raise PersonaInvalid(f"{name!r} cannot name a persona: use letters, digits, - and _ (no spaces)")
    if name.casefold() == DEFAULT:
        raise PersonaInvalid(f"{DEFAULT!r} means the default persona and cannot name one")
    return name


def check_prompt(prompt: str) -> str:
    """``prompt`` without surrounding blanks, if it is a usable system prompt."""
    prompt = prompt.strip()
    if not prompt:
        raise PersonaInvalid("a persona's prompt cannot be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PersonaInvalid(
            f"a persona's prompt has at most {MAX_PROMPT_CHARS} characters ({len(prompt)} given)"
        )
    if _CONTROL.search(prompt):
        raise PersonaInvalid("a persona's prompt cannot hold control characters")
    return prompt


def check_temperature(temperature: float | None) -> float | None:
    if temperature is None:
        return None
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise PersonaInvalid("a persona's temperature is a number from 0 to 2")
    if not math.isfinite(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise PersonaInvalid(f"a persona's temperature is from 0 to {MAX_TEMPERATURE:g} ({temperature} given)")
    return float(temperature)


def check_voice(voice: str | None) -> str | None:
    """``voice`` without surrounding blanks (None for none), if it can name a voice at all."""
    return _check_text("voice", voice, MAX_VOICE_CHARS)


def _check_text(what: str, text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise PersonaInvalid(f"a persona's {what} is text")
    text = text.strip()
    if len(text) > limit:
        raise PersonaInvalid(f"a persona's {what} has at most {limit} characters ({len(text)} given)")
    if _CONTROL.search(text) or (what == "voice" and "\n" in text):
        raise PersonaInvalid(f"a persona's {what} cannot hold control characters")
    return text or None


def checked(persona: Persona) -> Persona:
    """``persona`` as it may be stored, or ``PersonaInvalid`` saying what is wrong (one line)."""
    if persona.name is None:
        raise PersonaInvalid("a persona needs a name")
    return replace(
        persona,
        name=check_name(persona.name),
        prompt=check_prompt(persona.prompt),
        temperature=check_temperature(persona.temperature),
        voice=_check_text("voice", persona.voice, MAX_VOICE_CHARS),
        greeting=_check_text("greeting", persona.greeting, MAX_GREETING_CHARS),
    )


def parse_personas(text: str) -> list[Persona]:
    """The personas of a personas file (TOML), each checked; ``PersonaInvalid`` for any fault.

    The file holds one table per persona::

        [personas.pirate]
        prompt = "You are a cheerful pirate. Answer in one or two sentences."
        temperature = 0.7     # optional
        voice = "en-us"       # optional
        greeting = "Ahoy!"    # optional
        default = true        # optional: at most one persona
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PersonaInvalid(f"not TOML: {error}") from None
    tables = data.get("personas")
    unknown = set(data) - {"personas"}
    if unknown:
        raise PersonaInvalid(f"unknown key {sorted(unknown)[0]!r} (personas go in [personas.NAME] tables)")
    if not isinstance(tables, dict) or not tables:
        raise PersonaInvalid("no [personas.NAME] table")
    personas = [_parse_one(name, table) for name, table in tables.items()]
    if sum(persona.is_default for persona in personas) > 1:
        raise PersonaInvalid("more than one persona says default = true")
    return personas


def _parse_one(name: str, table: object) -> Persona:
    if not isinstance(table, dict):
        raise PersonaInvalid(f"personas.{name} is not a table")
    unknown = set(table) - _FILE_KEYS
    if unknown:
        raise PersonaInvalid(f"personas.{name}: unknown key {sorted(unknown)[0]!r}")
    prompt, default = table.get("prompt"), table.get("default", False)
    if not isinstance(prompt, str):
        raise PersonaInvalid(f"personas.{name}: a prompt (text) is needed")
    if not isinstance(default, bool):
        raise PersonaInvalid(f"personas.{name}: default is true or false")
    try:
        return checked(
            Persona(
                name=name,
                prompt=prompt,
                voice=table.get("voice"),
                temperature=table.get("temperature"),
                greeting=table.get("greeting"),
                is_default=default,
            )
        )
    except PersonaInvalid as error:
        raise PersonaInvalid(f"personas.{name}: {error}") from None


# --- the file, and the book the writer asks ----------------------------------------------------


class PersonaFile:
    """The personas file, looked at no more than every ``every_s``: by its mtime, then its content.

    ``changed`` hands out the file's personas once per new content; a content that does not
    parse is logged once (a warning) and handed out never, so the last good personas stay.
    """

    def __init__(
        self, path: Path, every_s: float = CHECK_FILE_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.every_s = every_s
        self.clock = clock
        self._checked_at: float | None = None
        self._mtime: int | None = None
        self._seen: str | None = None  # the hash of the content last handed out or found broken

    def changed(self) -> list[Persona] | None:
        """The file's personas if its content changed since the last look; None otherwise (blocking)."""
        now = self.clock()
        if self._checked_at is not None and now - self._checked_at < self.every_s:
            return None
        self._checked_at = now
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime == self._mtime:
                return None
            content = self.path.read_bytes()
        except OSError as error:
            if self._mtime != -1:  # once per disappearance, not every look
                log.warning("personas file %s cannot be read (%s); the stored personas stay", self.path, error)
                self._mtime = -1
            return None
        self._mtime = mtime
        digest = hashlib.sha256(content).hexdigest()
        if digest == self._seen:
            return None
        self._seen = digest
        try:
            return parse_personas(content.decode("utf-8"))
        except (PersonaInvalid, UnicodeDecodeError) as error:
            log.warning("personas file %s not loaded: %s; the stored personas stay", self.path, error)
            return None

    def retry(self) -> None:
        """Hand the current content out again at the next look (storing it failed)."""
        self._mtime = self._seen = None
        self._checked_at = None


class PersonaBook:
    """Which persona writes the next reply in a conversation (blocking: call it from a worker thread).

    ``store`` None: the configured prompt answers everyone (a deployment or a test without one).
    """

    def __init__(
        self,
        store: PersonaStore | None,
        configured_prompt: str,
        file: PersonaFile | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.configured = Persona(name=None, prompt=configured_prompt)
        self.file = file
        self.audit = audit
        self._pinned: Persona | None = None
        self._loading = threading.Lock()  # replies written at once look at the file one at a time

    def pin(self, name: str) -> Persona:
        """Answer every conversation with the stored persona ``name`` (``iris ask --persona``)."""
        found = self.store.persona(name) if self.store is not None else None
        if found is None:
            raise PersonaNotFound(f"no persona named {name!r}")
        self._pinned = found
        return found

    def for_conversation(self, conversation_id: int) -> Persona:
        """The persona of the conversation's chat: the one an admin chose, else the default, else
        the configured prompt. Loads the personas file first when it changed."""
        if self.store is None:
            return self.configured
        self.refresh()
        if self._pinned is not None:
            return self.store.persona(self._pinned.name or "") or self._pinned
        return self.store.persona_for(conversation_id) or self.configured

    def for_arm(self, conversation_id: int, name: str) -> Persona | None:
        """Persona ``name`` for a conversation on that arm of a persona A/B test; None when the
        conversation stays out of the test: its chat has a persona someone chose (an admin's
        choice wins), the book is pinned (``iris ask --persona``), or ``name`` was removed."""
        if self.store is None or self._pinned is not None:
            return None
        self.refresh()
        if self.store.chosen_persona(conversation_id) is not None:
            return None
        return self.store.persona(name)

    def refresh(self) -> list[str]:
        """Store the personas file's personas if it changed; the names that changed (never raises)."""
        if self.store is None or self.file is None:
            return []
        with self._loading:
            personas = self.file.changed()
            if personas is None:
                return []
            try:
                names = self.store.load_personas(personas, FILE_ACTOR)
            except Exception:
                log.exception(
                    "could not store the personas of %s; trying again at the next reply", self.file.path
                )
                self.file.retry()
                return []
        log.info(
            "personas file %s loaded: %d personas, changed: %s", self.file.path, len(personas), names or "none"
        )
        if names and self.audit is not None:
            self._audit(names)
        return names

    def _audit(self, names: Sequence[str]) -> None:
        try:
            assert self.audit is not None and self.file is not None
            details: dict[str, object] = {"file": str(self.file.path), "changed": list(names)}
            self.audit.record_audit(FILE_ACTOR, AuditAction.PERSONA_FILE, None, details)
        except Exception:
            log.exception("could not write the personas file's change to the audit trail")
