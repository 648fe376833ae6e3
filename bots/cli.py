"""The ``iris`` command line."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import mimetypes
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bots.settings import Settings
from core.domain import Audio, ChatRef, IncomingMessage, Notice, Person, ReplyDone, Stats, Transcribed
from core.service import ChatService

app = typer.Typer(help="Iris: a voice chat bot that learns from its users.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
models_app = typer.Typer(help="The model versions the bots can serve.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")


def _settings() -> Settings:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def local_person() -> Person:
    """The person at this terminal."""
    return Person("console", getpass.getuser())


@app.command()
def chat(chat_id: Annotated[str, typer.Option("--chat", help="Conversation to continue.")] = "local") -> None:
    """A local chat in the terminal: text, /voice PATH, /good, /bad, /fix, /reset, /forget."""
    from bots.app import build_app
    from bots.console.chat import ConsoleChat

    application = build_app(_settings())
    try:
        asyncio.run(ConsoleChat(application.service, local_person(), chat_id).run())
    finally:
        application.close()


@app.command()
def ask(
    text: Annotated[str | None, typer.Argument(help="The message; leave out with --voice.")] = None,
    voice: Annotated[Path | None, typer.Option(help="An audio file to send instead of text.")] = None,
    chat_id: Annotated[str, typer.Option("--chat", help="Conversation to continue.")] = "ask",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Send one message and print the reply (scriptable)."""
    from bots.app import build_app

    if (text is None) == (voice is None):
        raise typer.BadParameter("give either TEXT or --voice PATH")
    audio = None
    if voice is not None:
        mime, _ = mimetypes.guess_type(voice.name)
        audio = Audio(voice.read_bytes(), mime, voice.name)
    message = IncomingMessage(ChatRef("console", chat_id), local_person(), text=text, audio=audio)
    application = build_app(_settings())
    try:
        result = asyncio.run(_ask(application.service, message))
    finally:
        application.close()
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        if result["transcript"] is not None:
            typer.echo(f'🎤 "{result["transcript"]}"')
        typer.echo(result["reply"] if result["reply"] is not None else f"({result['notice']})")
    if result["reply"] is None:
        raise typer.Exit(1)


async def _ask(service: ChatService, message: IncomingMessage) -> dict[str, object]:
    result: dict[str, object] = {"turn_id": None, "transcript": None, "reply": None, "model": None}
    async for event in service.handle(message):
        if isinstance(event, Transcribed):
            result["transcript"] = event.text
        elif isinstance(event, ReplyDone):
            t = event.timings
            result.update(
                turn_id=event.turn_id,
                reply=event.text,
                model=event.model,
                timings={
                    "transcribe_ms": t.transcribe_ms,
                    "generate_ms": t.generate_ms,
                    "total_ms": t.total_ms,
                    "tokens": t.tokens,
                },
            )
        elif isinstance(event, Notice):
            result.update(notice=event.text, notice_kind=event.kind.value, user_turn_id=event.turn_id)
    return result


class Vote(StrEnum):
    up = "up"
    down = "down"


@app.command()
def rate(
    turn_id: int,
    vote: Vote,
    fix: Annotated[str | None, typer.Option(help="A better answer, stored for review.")] = None,
) -> None:
    """Rate a stored reply as the local user, optionally with a better answer."""
    from bots.app import build_app
    from core.service import UnknownReply

    application = build_app(_settings())  # models load lazily: rating never touches them
    service, person = application.service, local_person()

    async def go() -> None:
        outcome = await service.rate(person, turn_id, vote is Vote.up)
        typer.echo(f"rating {outcome.value}: turn {turn_id} {'👍' if vote is Vote.up else '👎'}")
        if fix:
            correction = await service.correct(person, turn_id, fix)
            typer.echo(f"correction {correction} stored, pending review")

    try:
        asyncio.run(go())
    except UnknownReply as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    finally:
        application.close()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    from bots.app import database_url
    from storage.migrate import current, upgrade

    url = database_url(_settings())
    upgrade(url)
    typer.echo(f"database at revision {current(url)}")


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Turns, voice share and ratings by model version."""
    from bots.app import open_store

    store = open_store(_settings())
    try:
        figures = store.stats()
    finally:
        store.engine.dispose()
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps({**asdict(figures), "voice_share": figures.voice_share}))
        return
    typer.echo(format_stats(figures))


def format_stats(figures: Stats) -> str:
    lines = [
        f"people {figures.people} · conversations {figures.conversations} · "
        f"messages {figures.user_turns} ({figures.voice_share:.0%} voice) · replies {figures.replies}",
        f"corrections: {figures.corrections_pending} pending, {figures.corrections_approved} approved, "
        f"{figures.corrections_rejected} rejected",
        f"active model: {figures.active_model or '-'}",
        f"{'model':40} {'replies':>8} {'👍':>5} {'👎':>5} {'👍 share':>9}",
    ]
    for row in figures.by_model:
        rated = row.up + row.down
        share = f"{row.up / rated:.0%}" if rated else "-"
        lines.append(f"{row.model:40} {row.replies:>8} {row.up:>5} {row.down:>5} {share:>9}")
    return "\n".join(lines)


@models_app.command("list")
def models_list() -> None:
    """The registered model versions; * marks the one the bots serve."""
    from bots.app import ensure_served_model, open_store

    settings = _settings()
    store = open_store(settings)
    try:
        ensure_served_model(store, settings)
        for version in store.list_models():
            typer.echo(f"{'*' if version.active else ' '} {version.name:40} {version.gguf_path}")
    finally:
        store.engine.dispose()


@models_app.command("activate")
def models_activate(name: str) -> None:
    """Serve NAME from the next reply on (running bots switch without a restart)."""
    from bots.app import open_store
    from storage.repository import NotFound

    store = open_store(_settings())
    try:
        version = store.activate_model(name)
    except NotFound as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    finally:
        store.engine.dispose()
    typer.echo(f"active: {version.name}")


class Platform(StrEnum):
    telegram = "telegram"
    discord = "discord"
    all = "all"


@app.command()
def run(platform: Annotated[Platform, typer.Argument()] = Platform.all) -> None:
    """Serve the platforms that have a token; with none, open the local chat."""
    settings = _settings()
    configured = settings.configured_platforms
    wanted = configured if platform is Platform.all else [p for p in configured if p == platform.value]
    if not wanted:
        needed = (
            "TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN"
            if platform is Platform.all
            else f"{platform.value.upper()}_BOT_TOKEN"
        )
        typer.echo(f"No {needed} is set, so no bot can start; opening the local chat instead.", err=True)
        chat(chat_id="local")
        return
    from bots.serve import serve

    asyncio.run(serve(settings, wanted))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
