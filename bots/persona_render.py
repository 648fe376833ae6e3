"""What ``/persona`` shows, the same on Telegram and Discord: the list, each outcome, each refusal."""

from __future__ import annotations

from core.domain import ChatRef
from core.persona_admin import PersonaListing
from core.personas import Persona

PROMPT_SHOWN = 300  # characters of each prompt the list shows (all of it: `iris persona list --json`)
MAX_PIECES = 5  # messages one list takes at most; the rest is counted, not shown
ANSWER_CHARS = 300  # a refusal quotes what was given: never more than this

NOT_STORED = "Personas are not stored on this deployment, so there is nothing to change."


def one_line(text: str, limit: int = ANSWER_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def not_changed(error: Exception) -> str:
    """A refused change, in one line: nothing was stored."""
    return one_line(f"Not changed: {error}.")


def added(persona: Persona) -> str:
    default = " It is the default persona." if persona.is_default else ""
    return f"Added persona {persona.name} (version {persona.version}).{default}"


def edited(persona: Persona) -> str:
    default = " It is the default persona." if persona.is_default else ""
    return f"Persona {persona.name} is at version {persona.version}.{default}"


def made_default(persona: Persona) -> str:
    return f"{persona.name} is now the default persona: chats without their own use it from their next reply."


def removed(name: str, moved: list[ChatRef]) -> str:
    back = f" {len(moved)} chat(s) that used it are back on the default." if moved else ""
    return f"Removed persona {name}.{back}"


def now_using(persona: Persona | None, chosen: str | None) -> str:
    """What the chat is told after ``use`` (never the prompt)."""
    if chosen is not None:
        return f"This chat now answers with persona {chosen}, from its next reply."
    if persona is not None:
        return f"This chat now answers with the default persona ({persona.name}), from its next reply."
    return "This chat now answers with the default prompt, from its next reply."


def listing(found: PersonaListing, limit: int) -> list[str]:
    """Every persona with its settings, chats and the start of its prompt, in at most ``MAX_PIECES``
    messages of at most ``limit`` characters (admins only: prompts are shown)."""
    if not found.personas:
        return ["No personas yet: replies use the default prompt. Add one with /persona add."]
    head = f"{len(found.personas)} persona(s); ★ marks the default."
    if not any(persona.is_default for persona in found.personas):
        head += " None is the default: chats without one of their own get the default prompt."
    pieces, piece = [], head
    for shown, persona in enumerate(found.personas):
        entry = _entry(persona, len(found.chats.get(persona.name or "", [])), limit)
        if len(piece) + 2 + len(entry) <= limit:
            piece += "\n\n" + entry
            continue
        pieces.append(piece)
        if len(pieces) == MAX_PIECES:
            rest = len(found.personas) - shown
            pieces[-1] = _fit(pieces[-1], f"\n\n…and {rest} more: `iris persona list` shows them all.", limit)
            return pieces
        piece = entry
    pieces.append(piece)
    return pieces


def _entry(persona: Persona, chats: int, limit: int) -> str:
    mark = "★ " if persona.is_default else "• "
    settings = [f"version {persona.version}"]
    if persona.temperature is not None:
        settings.append(f"temperature {persona.temperature:g}")
    if persona.voice:
        settings.append(f"voice {persona.voice}")
    if persona.greeting:
        settings.append("a greeting")
    if chats:
        settings.append(f"{chats} chat(s)")
    prompt = one_line(persona.prompt, min(PROMPT_SHOWN, limit // 2))
    return f"{mark}{persona.name}: {', '.join(settings)}\n{prompt}"


def _fit(piece: str, tail: str, limit: int) -> str:
    return piece[: limit - len(tail)] + tail
