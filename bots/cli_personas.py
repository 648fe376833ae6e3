"""``iris persona``: the system prompts replies are written with, and which chat uses which.

Every change is read by the running bots at their next reply (no restart) and written to the
audit trail with who made it, through the same part the chats' ``/persona`` uses
(``core.persona_admin``). Input that cannot be stored, a voice the configured synthesizer does not
have included, is refused in one line, exit code 1, with nothing stored.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from bots.app import build_speaker, load_settings, opened_store
from bots.cli_models import console_actor
from bots.settings import Settings
from core.audit import AuditTrail
from core.domain import ChatRef
from core.persona_admin import PersonaAdmin
from core.personas import DEFAULT, Persona, PersonaInvalid, PersonaNotFound, PersonaRefused

if TYPE_CHECKING:
    from storage.personas import SqlPersonas
    from storage.repository import SqlStore

persona_app = typer.Typer(help="Personas: named system prompts, chosen per chat.", no_args_is_help=True)

PromptOption = Annotated[
    str | None, typer.Option("--prompt", help="The system prompt (at most 4,000 characters).")
]
VoiceOption = Annotated[
    str | None, typer.Option("--voice", help='The voice for its spoken replies ("": none).')
]
TemperatureOption = Annotated[
    float | None,
    typer.Option("--temperature", help="Its sampling temperature, 0 to 2 (default: the setting's)."),
]
GreetingOption = Annotated[str | None, typer.Option("--greeting", help='What it says first ("": none).')]
DefaultOption = Annotated[bool, typer.Option("--default", help="Make it the default persona.")]


class ChatPlatform(StrEnum):
    telegram = "telegram"
    discord = "discord"
    console = "console"


def _refuse(error: Exception) -> typer.Exit:
    """One line on stderr, exit code 1: how every refused change ends."""
    typer.echo(f"not changed: {error}", err=True)
    return typer.Exit(1)


def _personas(store: SqlStore) -> SqlPersonas:
    from storage.personas import SqlPersonas

    return SqlPersonas(store.engine)


def _admin(store: SqlStore, settings: Settings) -> PersonaAdmin:
    """What ``/persona`` changes with, on this command's store; a voice is checked against the
    synthesizer the settings name (IRIS_TTS_ENGINE, espeak-ng by default)."""

    def voice_problem(voice: str) -> str | None:
        speaker = build_speaker(settings, store)
        try:
            return speaker.voice_problem(voice)
        finally:
            speaker.close()

    return PersonaAdmin(_personas(store), AuditTrail(store), voice_problem)


@persona_app.command("add")
def persona_add(
    name: str,
    prompt: PromptOption = None,
    voice: VoiceOption = None,
    temperature: TemperatureOption = None,
    greeting: GreetingOption = None,
    default: DefaultOption = False,
) -> None:
    """Add persona NAME; with --default, chats without one of their own use it from their next reply."""
    wanted = Persona(
        name, prompt or "", voice=voice, temperature=temperature, greeting=greeting, is_default=default
    )
    settings = load_settings()
    with opened_store(settings) as store:
        try:
            added = asyncio.run(_admin(store, settings).add(wanted, console_actor()))
        except (PersonaInvalid, PersonaRefused) as error:
            raise _refuse(error) from None
    typer.echo(f"added persona {name} (version {added.version}){' as the default' if added.is_default else ''}")


@persona_app.command("edit")
def persona_edit(
    name: str,
    prompt: PromptOption = None,
    voice: VoiceOption = None,
    temperature: TemperatureOption = None,
    greeting: GreetingOption = None,
    default: DefaultOption = False,
) -> None:
    """Change persona NAME (a new prompt is its next version); the bots use it from their next reply."""
    if (prompt, voice, temperature, greeting) == (None, None, None, None) and not default:
        typer.echo(
            "not changed: say what to change (--prompt, --voice, --temperature, --greeting, --default)",
            err=True,
        )
        raise typer.Exit(1)
    settings = load_settings()
    with opened_store(settings) as store:
        change = _admin(store, settings).edit(
            name,
            console_actor(),
            prompt=prompt,
            voice=voice,
            temperature=temperature,
            greeting=greeting,
            default=default,
        )
        try:
            edited = asyncio.run(change)
        except (PersonaInvalid, PersonaNotFound, PersonaRefused) as error:
            raise _refuse(error) from None
    typer.echo(f"persona {name} is at version {edited.version}{' (the default)' if edited.is_default else ''}")


@persona_app.command("list")
def persona_list(as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False) -> None:
    """The stored personas, the default marked, with the chats set to each."""
    with opened_store(load_settings()) as store:
        personas = _personas(store)
        stored, chats = personas.personas(), personas.chats()
    if as_json:
        rows = [
            {**asdict(p), "chats": [f"{c.platform}:{c.chat_id}" for c in chats.get(p.name or "", [])]}
            for p in stored
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not stored:
        typer.echo("No personas: IRIS_CHAT_SYSTEM_PROMPT answers every chat. Add one with `iris persona add`.")
        return
    if not any(p.is_default for p in stored):
        typer.echo("No default persona: chats without one of their own get IRIS_CHAT_SYSTEM_PROMPT.")
    for persona in stored:
        mark = " (default)" if persona.is_default else ""
        used = ", ".join(f"{c.platform}:{c.chat_id}" for c in chats.get(persona.name or "", []))
        extra = f", temperature {persona.temperature:g}" if persona.temperature is not None else ""
        extra += f", voice {persona.voice}" if persona.voice else ""
        first_line = persona.prompt.splitlines()[0][:60]
        typer.echo(f"• {persona.name}{mark}: version {persona.version}{extra}; {first_line!r}")
        if used:
            typer.echo(f"  chats: {used}")


@persona_app.command("remove")
def persona_remove(name: str) -> None:
    """Remove persona NAME; chats that used it get the default from their next reply."""
    settings = load_settings()
    with opened_store(settings) as store:
        try:
            moved = asyncio.run(_admin(store, settings).remove(name, console_actor()))
        except (PersonaNotFound, PersonaRefused) as error:
            raise _refuse(error) from None
        chats = [f"{chat.platform}:{chat.chat_id}" for chat in moved]
    back = f"; back on the default: {', '.join(chats)}" if chats else ""
    typer.echo(f"removed persona {name}{back}")


# A Telegram group's id is negative ("-1001234"): taken as the chat id, not as an unknown option.
@persona_app.command("use", context_settings={"ignore_unknown_options": True})
def persona_use(
    platform: ChatPlatform,
    chat_id: str,
    name: Annotated[str, typer.Argument(metavar="NAME|default", help="A persona, or `default`.")],
) -> None:
    """Answer chat CHAT_ID of PLATFORM with persona NAME (or the default) from its next reply on."""
    chat_id = chat_id.strip()
    if not chat_id or len(chat_id) > 128:
        typer.echo("not changed: a chat id has 1 to 128 characters", err=True)
        raise typer.Exit(1)
    chat = ChatRef(platform.value, chat_id)
    chosen = None if name.casefold() == DEFAULT else name
    settings = load_settings()
    with opened_store(settings) as store:
        try:
            asyncio.run(_admin(store, settings).use(chat, chosen, console_actor()))
        except PersonaNotFound as error:
            raise _refuse(error) from None
        target = f"{chat.platform}:{chat.chat_id}"
    typer.echo(f"{target} now answers with {'the default persona' if chosen is None else f'persona {chosen}'}")
