"""The ``iris`` command line."""

from __future__ import annotations

import asyncio
import getpass
import json
import mimetypes
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bots.settings import Settings
from core.domain import Audio, ChatRef, IncomingMessage, Notice, Person, ReplyDone, Stats, Transcribed
from core.service import ChatService

if TYPE_CHECKING:
    from finetune.dataset import BuildConfig, BuildReport
    from finetune.retrain import RetrainConfig

app = typer.Typer(help="Iris: a voice chat bot that learns from its users.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
models_app = typer.Typer(help="The model versions the bots can serve.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
feedback_app = typer.Typer(help="Training data from people's ratings and corrections.", no_args_is_help=True)
dataset_app = typer.Typer(
    help="FineTome extended with the feedback, for the next fine-tune.", no_args_is_help=True
)
app.add_typer(feedback_app, name="feedback")
app.add_typer(dataset_app, name="dataset")


def _settings() -> Settings:
    from bots.logs import configure_logging

    settings = Settings()
    configure_logging(settings)
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
def stats(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    plot: Annotated[
        Path | None, typer.Option(metavar="FILE.png", help="Also draw ratings per model version over time.")
    ] = None,
) -> None:
    """Turns, voice share and ratings by model version."""
    from bots.app import open_store

    store = open_store(_settings())
    try:
        figures = store.stats()
        if plot is not None:
            draw_stats(store.engine, figures, plot)
    finally:
        store.engine.dispose()
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps({**asdict(figures), "voice_share": figures.voice_share}))
        return
    from bots.render import format_stats

    typer.echo(format_stats(figures))


def draw_stats(engine: Any, figures: Stats, path: Path) -> None:
    """The picture behind ``iris stats --plot`` (needs the data extra: matplotlib)."""
    from finetune.plots import plot_stats
    from storage.queries import activity

    try:
        plot_stats(figures, activity(engine), path)
    except ModuleNotFoundError as error:
        typer.echo(f"{error.name} is missing: install the data extra (pip install -e '.[data]')", err=True)
        raise typer.Exit(1) from None
    except OSError as error:
        typer.echo(f"could not write {path}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"picture: {path}", err=True)


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
            if version.metrics:
                typer.echo(f"    {format_model_metrics(version.metrics)}")
    finally:
        store.engine.dispose()


def format_model_metrics(metrics: dict[str, object]) -> str:
    """One line of a retrained version's gate figures (held-out NLL, candidate vs the model it replaced)."""
    gate = metrics.get("gate")
    if not isinstance(gate, dict):
        return ""

    def pair(split: str) -> str:
        figures = gate.get(split) or {}
        before, after = figures.get("active"), figures.get("candidate")
        if after is None:
            return "-"
        return f"{before:.3f} → {after:.3f}" if before is not None else f"{after:.3f}"

    verdict = "passed" if gate.get("passed") else "refused"
    if metrics.get("forced"):
        verdict += " (forced)"
    training = metrics.get("training") if isinstance(metrics.get("training"), dict) else {}
    steps = training.get("steps") if isinstance(training, dict) else None
    line = f"gate {verdict} · feedback NLL {pair('feedback_nll')} · FineTome NLL {pair('finetome_nll')}"
    return line + (f" · {steps} steps" if steps else "")


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


@models_app.command("rollback")
def models_rollback() -> None:
    """Serve again the version that was active before the current one (running bots switch at once)."""
    from bots.app import open_store
    from storage.repository import NotFound

    store = open_store(_settings())
    try:
        current = store.active_model()
        version = store.rollback_model()
    except NotFound as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    finally:
        store.engine.dispose()
    typer.echo(f"active: {version.name} (was {current.name if current else '-'})")


def retrain_config(
    settings: Settings,
    profile: str | None = None,
    *,
    resume: bool = False,
    dry_run: bool = False,
    force: bool = False,
    dataset: Path | None = None,
) -> RetrainConfig:
    """The retrain settings as the pipeline takes them: the profile with the IRIS_RETRAIN_* overrides."""
    from bots.app import database_url, retrain_dir
    from finetune.gate import GateConfig
    from finetune.profiles import auto_profile_name, get_profile
    from finetune.retrain import RetrainConfig

    name = profile or settings.retrain_profile
    chosen = get_profile(auto_profile_name() if name == "auto" else name).with_overrides(
        backend=settings.retrain_backend,
        base_model=settings.retrain_base_model,
        objective=settings.retrain_objective,
        max_steps=settings.retrain_max_steps,
        learning_rate=settings.retrain_learning_rate,
        batch_size=settings.retrain_batch_size,
        max_seq_length=settings.retrain_max_seq_length,
        save_steps=settings.retrain_save_steps,
        quant=settings.retrain_quant,
    )
    build = build_config(settings, progress=False)  # one progress line per step is printed instead
    gate = GateConfig(
        finetome_tolerance=settings.gate_finetome_tolerance,
        min_feedback_gain=settings.gate_min_feedback_gain,
        max_rows=settings.gate_max_rows,
        context_tokens=settings.gate_context_tokens,
    )
    return RetrainConfig(
        database_url=database_url(settings),
        work_dir=retrain_dir(settings),
        base_cache=settings.retrain_base_cache or settings.data_dir / "models" / "hf",
        profile=chosen,
        gate=gate,
        finetome=settings.dataset_finetome,
        build=build,
        dataset=dataset,
        threads=settings.retrain_threads,
        force=force,
        dry_run=dry_run,
        resume=resume,
    )


@app.command()
def retrain(
    profile: Annotated[
        str | None, typer.Option(help="llama-3.2-1b, llama-3.2-3b or cpu-tiny (default: IRIS_RETRAIN_PROFILE).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the last killed or failed run.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Build the dataset and show the plan; train nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Promote even if the gate refuses (it must answer).")] = False,
    dataset: Annotated[
        Path | None, typer.Option(help="Train on this built dataset folder (iris dataset build) as it is.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Progress on stderr, JSON on stdout.")] = False,
) -> None:
    """Train on the feedback, export a GGUF, and promote it if it beats the active model."""
    from bots.app import ensure_served_model, open_store
    from finetune.retrain import NothingToResume, RetrainBusy
    from finetune.retrain import retrain as run_retrain

    settings = _settings()

    def say(line: str) -> None:
        typer.echo(line, err=as_json)

    def refuse(status: str, message: str) -> None:
        if as_json:
            typer.echo(json.dumps({"status": status, "name": None, "message": message}))
        else:
            typer.echo(message, err=True)
        raise typer.Exit(2)

    try:
        config = retrain_config(settings, profile, resume=resume, dry_run=dry_run, force=force, dataset=dataset)
    except (KeyError, ValueError) as error:
        refuse("not-started", str(error).strip("'\""))
    store = open_store(settings)
    try:
        ensure_served_model(store, settings)  # the gate compares with what the bots serve
        outcome = run_retrain(config, store, say)
    except (RetrainBusy, NothingToResume) as error:
        refuse("busy" if isinstance(error, RetrainBusy) else "nothing-to-resume", str(error))
    finally:
        store.engine.dispose()
    if as_json:
        typer.echo(json.dumps(outcome.to_json(), ensure_ascii=False, default=str))
    else:
        typer.echo(outcome.message)
    if outcome.status == "failed":
        raise typer.Exit(1)


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


# --- review, feedback export, dataset build ---------------------------------------


class ReviewStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    all = "all"


@app.command()
def review(
    list_: Annotated[bool, typer.Option("--list", help="Print the corrections and stop.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list, --approve or --reject: JSON.")] = False,
    approve: Annotated[int | None, typer.Option(metavar="ID", help="Approve correction ID.")] = None,
    reject: Annotated[int | None, typer.Option(metavar="ID", help="Reject correction ID.")] = None,
    text: Annotated[str | None, typer.Option(help="With --approve: the answer as it should read.")] = None,
    status: Annotated[ReviewStatus, typer.Option(help="With --list: which ones.")] = ReviewStatus.pending,
    reviewer: Annotated[str | None, typer.Option(help="Stored as who reviewed (default console:USER).")] = None,
) -> None:
    """Review corrections: one by one in the terminal, or --list / --approve ID / --reject ID."""
    from bots.app import open_store
    from bots.review import ReviewDesk, ReviewError
    from core.domain import CorrectionStatus

    if sum([list_, approve is not None, reject is not None]) > 1:
        raise typer.BadParameter("use one of --list, --approve ID and --reject ID")
    if text is not None and approve is None:
        raise typer.BadParameter("--text goes with --approve ID")
    store = open_store(_settings())
    desk = ReviewDesk(store, reviewer or f"console:{getpass.getuser()}")
    try:
        if list_:
            wanted = None if status is ReviewStatus.all else CorrectionStatus(status.value)
            found = desk.corrections(wanted)
            if as_json:
                typer.echo(json.dumps([desk.as_json(c) for c in found], ensure_ascii=False, indent=2))
            else:
                typer.echo("\n\n".join(desk.show(c) for c in found) or f"No {status.value} corrections.")
        elif approve is not None or reject is not None:
            chosen = approve if approve is not None else reject
            assert chosen is not None
            decided, note = desk.decide(chosen, approve is not None, text)
            typer.echo(json.dumps(desk.as_json(decided), ensure_ascii=False) if as_json else note)
        else:
            desk.run(_prompt, lambda line: typer.echo(line, nl=False))
    except ReviewError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    finally:
        store.engine.dispose()


def _prompt(label: str) -> str | None:
    try:
        return input(label)
    except EOFError:
        return None


def _moment(value: str | None, *, end: bool = False) -> datetime | None:
    """An ISO date or time (UTC unless it says otherwise); a bare date as --until includes that day."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date like 2026-01-31 or 2026-01-31T18:00") from None
    if end and len(value) == 10:
        moment += timedelta(days=1)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Consent(StrEnum):
    opt_out = "opt-out"
    opt_in = "opt-in"


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Option(help="Folder for sft.jsonl, kto.jsonl, dpo.jsonl, manifest.json.")],
    since: Annotated[str | None, typer.Option(help="Feedback given from this date or time on.")] = None,
    until: Annotated[
        str | None, typer.Option(help="Feedback given until this date (inclusive) or time.")
    ] = None,
    scrub: Annotated[bool | None, typer.Option(help="Mask e-mail addresses and phone numbers.")] = None,
    consent: Annotated[
        Consent | None, typer.Option(help="opt-out or opt-in (default: IRIS_FEEDBACK_CONSENT).")
    ] = None,
) -> None:
    """Export ratings and approved corrections as SFT (FineTome's shape), KTO and DPO files."""
    from bots.app import database_url
    from finetune.feedback import export_feedback

    settings = _settings()
    manifest = export_feedback(
        database_url(settings),
        out,
        since=_moment(since),
        until=_moment(until, end=True),
        scrub=settings.feedback_scrub if scrub is None else scrub,
        consent=(consent.value if consent else settings.feedback_consent),
        context_turns=settings.feedback_context_turns,
    )
    counts = manifest.counts
    typer.echo(
        f"{out}: {counts['sft']} SFT ({counts['sft_from_corrections']} corrections, "
        f"{counts['sft_from_ratings']} liked replies), {counts['kto']} KTO "
        f"({counts['kto_up']} up, {counts['kto_down']} down), {counts['dpo']} DPO"
    )
    left_out = ", ".join(f"{name} {n}" for name, n in manifest.excluded.items() if n)
    typer.echo(f"left out: {left_out or 'nothing'} · content {manifest.content_hash[:12]}")


class Answer(StrEnum):
    yes = "yes"
    no = "no"
    unset = "unset"


@feedback_app.command("consent")
def feedback_consent(platform: str, user_id: str, answer: Answer) -> None:
    """Record whether a person agrees that their words become training data (unset: the setting decides)."""
    from bots.app import open_store
    from storage.queries import set_consent

    store = open_store(_settings())
    try:
        value = {Answer.yes: True, Answer.no: False, Answer.unset: None}[answer]
        set_consent(store.engine, Person(platform, user_id), value)
    finally:
        store.engine.dispose()
    typer.echo(f"{platform}:{user_id} consent {answer.value}")


def build_config(settings: Settings, **given: Any) -> BuildConfig:
    """The dataset build knobs from the IRIS_DATASET_* settings; ``given`` values that are not None win."""
    from finetune.dataset import BuildConfig

    values: dict[str, Any] = {
        "sample_size": settings.dataset_sample_size,
        "min_score": settings.dataset_min_score,
        "min_chars": settings.dataset_min_chars,
        "max_chars": settings.dataset_max_chars,
        "near_duplicate": settings.dataset_near_duplicate,
        "feedback_oversample": settings.dataset_feedback_oversample,
        "person_cap": settings.dataset_person_cap,
        "eval_fraction": settings.dataset_eval_fraction,
        "eval_finetome": settings.dataset_eval_finetome,
        "seed": settings.dataset_seed,
        "scrub": settings.feedback_scrub,
        "consent": settings.feedback_consent,
    }
    values.update({name: value for name, value in given.items() if value is not None})
    return BuildConfig(**values)


@dataset_app.command("build")
def dataset_build(
    out: Annotated[Path, typer.Option(help="Folder for train/eval JSONL, report.json and hf/.")],
    finetome: Annotated[
        str | None, typer.Option(help="sample, a Hub name (mlabonne/FineTome-100k) or a parquet/JSONL path.")
    ] = None,
    feedback: Annotated[
        Path | None, typer.Option(help="An `iris feedback export` folder (default: export from the database).")
    ] = None,
    no_feedback: Annotated[bool, typer.Option("--no-feedback", help="FineTome only.")] = False,
    sample_size: Annotated[int | None, typer.Option(help="FineTome rows to draw (0: all).")] = None,
    min_score: Annotated[float | None, typer.Option(help="Minimum FineTome score.")] = None,
    oversample: Annotated[float | None, typer.Option(help="Copies of each feedback example.")] = None,
    person_cap: Annotated[
        int | None, typer.Option(help="Most feedback examples per person (0: no cap).")
    ] = None,
    eval_fraction: Annotated[float | None, typer.Option(help="Share of feedback held out.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Extend FineTome with the feedback: clean, deduplicate, hold out, balance, save."""
    from bots.app import database_url
    from finetune.dataset import FineTomeUnavailable, build_dataset

    settings = _settings()
    config = build_config(
        settings,
        min_score=min_score,
        feedback_oversample=oversample,
        person_cap=person_cap,
        eval_fraction=eval_fraction,
        seed=seed,
    )
    if sample_size is not None:
        config = replace(config, sample_size=sample_size or None)  # 0: every row
    source = finetome or settings.dataset_finetome
    try:
        report = build_dataset(
            source,
            out,
            database_url=None if no_feedback or feedback else database_url(settings),
            feedback_dir=None if no_feedback else feedback,
            config=config,
        )
    except (FineTomeUnavailable, FileNotFoundError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    except ModuleNotFoundError as error:
        typer.echo(f"{error.name} is missing: install the data extra (pip install -e '.[data]')", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_build_report(report))


def format_build_report(report: BuildReport) -> str:
    lines = [f"FineTome: {report.finetome} · feedback: {report.feedback or '-'}"]
    for step in report.steps:
        counts = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in step.counts.items())
        lines.append(f"  {step.name.replace('_', ' '):<18} {counts}")
    lines.append("splits: " + ", ".join(f"{name} {n}" for name, n in report.splits.items()))
    return "\n".join(lines)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
