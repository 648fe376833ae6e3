"""The ``iris`` command line.

Chatting, asking, rating, stats and serving live here; ``bots.cli_models`` holds the
model registry and retraining, ``bots.cli_feedback`` review and training data.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import mimetypes
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from bots.app import load_settings
from bots.cli_ab import ab_app
from bots.cli_errors import explain, file_problem
from bots.cli_feedback import dataset_app, feedback_app, review
from bots.cli_models import models_app, retrain
from bots.cli_personas import persona_app
from bots.cli_trust import audit, db_prune
from bots.cli_web import web_app
from bots.logs import redact
from core.domain import (
    Audio,
    ChatRef,
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    ReplyDone,
    Spoken,
    Stats,
    Transcribed,
)
from core.experiments import ABConfig
from core.files import atomic_write
from core.service import ChatService

app = typer.Typer(help="Iris: a voice chat bot that learns from its users.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
models_app.add_typer(ab_app, name="ab")
app.add_typer(feedback_app, name="feedback")
app.add_typer(dataset_app, name="dataset")
app.add_typer(persona_app, name="persona")
app.add_typer(web_app, name="web")  # `iris web` serves the console; `iris web admin …` its admins
app.command()(review)
app.command()(retrain)
app.command()(audit)
db_app.command("prune")(db_prune)


def local_person() -> Person:
    """The person at this terminal."""
    return Person("console", getpass.getuser())


@app.command()
def chat(chat_id: Annotated[str, typer.Option("--chat", help="Conversation to continue.")] = "local") -> None:
    """A local chat in the terminal: text, /voice PATH, /good, /bad, /fix, /reset, /forget."""
    from bots.app import build_app
    from bots.console.chat import ConsoleChat

    application = build_app(load_settings())
    try:
        spoken_dir = application.settings.data_dir / "spoken"
        asyncio.run(ConsoleChat(application.service, local_person(), chat_id, spoken_dir=spoken_dir).run())
    finally:
        application.close()


@app.command()
def ask(
    text: Annotated[str | None, typer.Argument(help="The message; leave out with --voice.")] = None,
    voice: Annotated[
        Path | None,
        typer.Option(help="An audio file to send instead of text.", exists=True, dir_okay=False, readable=True),
    ] = None,
    chat_id: Annotated[str, typer.Option("--chat", help="Conversation to continue.")] = "ask",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    speak: Annotated[
        Path | None,
        typer.Option(help="Also write the spoken reply to this OGG/Opus file.", dir_okay=False, writable=True),
    ] = None,
    persona: Annotated[
        str | None, typer.Option(help="Answer with this persona, whatever the chat's (`iris persona list`).")
    ] = None,
) -> None:
    """Send one message and print the reply (scriptable)."""
    from bots.app import build_app
    from core.personas import PersonaNotFound

    if (text is None) == (voice is None):
        raise typer.BadParameter("give either TEXT or --voice PATH")
    audio = None
    if voice is not None:
        mime, _ = mimetypes.guess_type(voice.name)
        audio = Audio(voice.read_bytes(), mime, voice.name)
    message = IncomingMessage(
        ChatRef("console", chat_id), local_person(), text=text, audio=audio, speak=speak is not None
    )
    application = build_app(load_settings())
    try:
        if persona is not None:
            application.service.writer.personas.pin(persona)
        result = asyncio.run(_ask(application.service, message, speak))
    except PersonaNotFound as error:
        typer.echo(f"{error.args[0]} (`iris persona list` shows them)", err=True)
        raise typer.Exit(1) from None
    finally:
        application.close()
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        if result["transcript"] is not None:
            typer.echo(f'🎤 "{result["transcript"]}"')
        typer.echo(result["reply"] if result["reply"] is not None else f"({result['notice']})")
        if result.get("spoken"):
            typer.echo(f"(spoken: {speak}, {result['spoken']['seconds']:.1f} s)")  # type: ignore[index]
        elif result.get("speech_notice"):
            typer.echo(str(result["speech_notice"]))
    if result["reply"] is None:
        raise typer.Exit(1)


async def _ask(service: ChatService, message: IncomingMessage, speak: Path | None = None) -> dict[str, object]:
    result: dict[str, object] = {"turn_id": None, "transcript": None, "reply": None, "model": None}
    async for event in service.replies.handle(message):
        if isinstance(event, Spoken) and speak is not None:
            try:
                # Whole or not at all, 0600: a spoken reply holds the person's conversation.
                await asyncio.to_thread(atomic_write, speak, event.speech.ogg, private=True)
            except OSError as error:
                result["speech_notice"] = f"(the spoken reply was not written: {file_problem(error)})"
            else:
                result["spoken"] = {
                    "path": str(speak),
                    "seconds": round(event.speech.seconds, 2),
                    "speak_ms": round(event.speak_ms, 1),
                    "truncated": event.speech.truncated,
                }
        elif isinstance(event, Notice) and event.kind is NoticeKind.SPEECH_FAILED:
            result["speech_notice"] = event.text
        elif isinstance(event, Transcribed):
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
                memory={"correction": event.memory[0], "mode": event.memory[1]} if event.memory else None,
                persona=event.persona,
            )
            # As stored (core.languages): the person's message's language and the reply's.
            result.update(await asyncio.to_thread(_stored_languages, service, event.turn_id))
        elif isinstance(event, Notice):
            result.update(notice=event.text, notice_kind=event.kind.value, user_turn_id=event.turn_id)
    return result


def _stored_languages(service: ChatService, reply_id: int) -> dict[str, object]:
    reply = service.store.get_turn(reply_id)
    said = service.store.get_turn(reply.reply_to_id) if reply and reply.reply_to_id else None
    return {
        "language": said.language if said else None,
        "language_probability": said.language_probability if said else None,
        "reply_language": reply.language if reply else None,
    }


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
    from core.feedback import UnknownReply

    application = build_app(load_settings())  # models load lazily: rating never touches them
    service, person = application.service, local_person()

    async def go() -> None:
        outcome = await service.feedback.rate(person, turn_id, vote is Vote.up)
        typer.echo(f"rating {outcome.value}: turn {turn_id} {'👍' if vote is Vote.up else '👎'}")
        if fix:
            correction = await service.feedback.correct(person, turn_id, fix)
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

    url = database_url(load_settings())
    upgrade(url)
    typer.echo(f"database at revision {current(url)}")


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    plot: Annotated[
        Path | None, typer.Option(metavar="FILE.png", help="Also draw ratings per model version over time.")
    ] = None,
) -> None:
    """Turns, voice share and ratings by model version."""
    from bots.app import opened_store

    settings = load_settings()
    with opened_store(settings) as store:
        figures = store.stats()
        if plot is not None:
            draw_stats(store.engine, figures, plot, settings.ab)
    if as_json:
        from dataclasses import asdict

        by_language = {code or "unknown": count for code, count in figures.by_language}
        typer.echo(
            json.dumps({**asdict(figures), "voice_share": figures.voice_share, "by_language": by_language})
        )
        return
    from bots.render import format_stats

    typer.echo(format_stats(figures))


def draw_stats(engine: Any, figures: Stats, path: Path, rules: ABConfig) -> None:
    """The picture behind ``iris stats --plot`` (needs the data extra: matplotlib)."""
    from core.ab import latest_report
    from finetune.plots import plot_stats
    from storage.experiments import SqlExperiments
    from storage.queries import activity

    try:
        plot_stats(figures, activity(engine), path, latest_report(SqlExperiments(engine, rules)))
    except ModuleNotFoundError as error:
        typer.echo(f"{error.name} is missing: install the data extra (pip install -e '.[data]')", err=True)
        raise typer.Exit(1) from None
    except OSError as error:
        typer.echo(f"could not write {path}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"picture: {path}", err=True)


class Platform(StrEnum):
    telegram = "telegram"
    discord = "discord"
    all = "all"


@app.command()
def run(platform: Annotated[Platform, typer.Argument()] = Platform.all) -> None:
    """Serve the platforms that have a token; with none, open the local chat."""
    settings = load_settings()
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
    from bots.stopping import run_until_terminated

    run_until_terminated(serve(settings, wanted))  # SIGTERM (systemd, docker) stops it as Ctrl+C does


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        # The last stop before a traceback would reach a person: one line on stderr,
        # the traceback only in the log (IRIS_LOG_LEVEL=DEBUG).
        logging.getLogger("iris").debug("the command failed", exc_info=True)
        sys.exit(f"iris: {redact(explain(error))}")
