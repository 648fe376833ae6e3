"""What ``/persona`` shows, the same on Telegram and Discord: the list, each outcome, each refusal.

In the admin's language (``core.i18n``); persona names, prompts, voices and command names stay as
they are. A refusal's reason comes from ``core.personas`` and is English, as ``iris persona`` says it.
"""

from __future__ import annotations

from core.domain import ChatRef
from core.i18n import N_, _, ngettext
from core.persona_admin import PersonaListing
from core.personas import Persona

PROMPT_SHOWN = 300  # characters of each prompt the list shows (all of it: `iris persona list --json`)
MAX_PIECES = 5  # messages one list takes at most; the rest is counted, not shown
ANSWER_CHARS = 300  # a refusal quotes what was given: never more than this

NOT_STORED = N_("Personas are not stored on this deployment, so there is nothing to change.")


def one_line(text: str, limit: int = ANSWER_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def not_changed(error: Exception) -> str:
    """A refused change, in one line: nothing was stored."""
    return one_line(_("Not changed: {error}.").format(error=error))


def _is_default(persona: Persona) -> str:
    return " " + _("It is the default persona.") if persona.is_default else ""


def added(persona: Persona) -> str:
    said = _("Added persona {name} (version {version}).").format(name=persona.name, version=persona.version)
    return said + _is_default(persona)


def edited(persona: Persona) -> str:
    said = _("Persona {name} is at version {version}.").format(name=persona.name, version=persona.version)
    return said + _is_default(persona)


def made_default(persona: Persona) -> str:
    return _("{name} is now the default persona: chats without their own use it from their next reply.").format(
        name=persona.name
    )


def removed(name: str, moved: list[ChatRef]) -> str:
    said = _("Removed persona {name}.").format(name=name)
    if not moved:
        return said
    back = ngettext(
        "{count} chat that used it is back on the default.",
        "{count} chats that used it are back on the default.",
        len(moved),
    ).format(count=len(moved))
    return f"{said} {back}"


def now_using(persona: Persona | None, chosen: str | None) -> str:
    """What the chat is told after ``use`` (never the prompt)."""
    if chosen is not None:
        return _("This chat now answers with persona {name}, from its next reply.").format(name=chosen)
    if persona is not None:
        return _("This chat now answers with the default persona ({name}), from its next reply.").format(
            name=persona.name
        )
    return _("This chat now answers with the default prompt, from its next reply.")


def listing(found: PersonaListing, limit: int) -> list[str]:
    """Every persona with its settings, chats and the start of its prompt, in at most ``MAX_PIECES``
    messages of at most ``limit`` characters (admins only: prompts are shown)."""
    if not found.personas:
        return [_("No personas yet: replies use the default prompt. Add one with /persona add.")]
    count = len(found.personas)
    head = ngettext("{count} persona; ★ marks the default.", "{count} personas; ★ marks the default.", count)
    head = head.format(count=count)
    if not any(persona.is_default for persona in found.personas):
        head += " " + _("None is the default: chats without one of their own get the default prompt.")
    pieces, piece = [], head
    for shown, persona in enumerate(found.personas):
        entry = _entry(persona, len(found.chats.get(persona.name or "", [])), limit)
        if len(piece) + 2 + len(entry) <= limit:
            piece += "\n\n" + entry
            continue
        pieces.append(piece)
        if len(pieces) == MAX_PIECES:
            rest = len(found.personas) - shown
            more = _("…and {count} more: `iris persona list` shows them all.").format(count=rest)
            pieces[-1] = _fit(pieces[-1], f"\n\n{more}", limit)
            return pieces
        piece = entry
    pieces.append(piece)
    return pieces


def _entry(persona: Persona, chats: int, limit: int) -> str:
    mark = "★ " if persona.is_default else "• "
    settings = [_("version {version}").format(version=persona.version)]
    if persona.temperature is not None:
        settings.append(_("temperature {value}").format(value=f"{persona.temperature:g}"))
    if persona.voice:
        settings.append(_("voice {voice}").format(voice=persona.voice))
    if persona.greeting:
        settings.append(_("a greeting"))
    if chats:
        settings.append(ngettext("{count} chat", "{count} chats", chats).format(count=chats))
    prompt = one_line(persona.prompt, min(PROMPT_SHOWN, limit // 2))
    return f"{mark}{persona.name}: {', '.join(settings)}\n{prompt}"


def _fit(piece: str, tail: str, limit: int) -> str:
    return piece[: limit - len(tail)] + tail
