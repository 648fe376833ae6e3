"""``iris review``, ``iris feedback`` and ``iris dataset``: from people's feedback to training data."""

from __future__ import annotations

import getpass
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bots.app import load_settings

if TYPE_CHECKING:
    from finetune.dataset import BuildReport

feedback_app = typer.Typer(help="Training data from people's ratings and corrections.", no_args_is_help=True)
dataset_app = typer.Typer(
    help="FineTome extended with the feedback, for the next fine-tune.", no_args_is_help=True
)


class ReviewStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    all = "all"


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
    from bots.app import build_memory, opened_store
    from bots.review import ReviewDesk, ReviewError
    from core.domain import CorrectionStatus

    if sum([list_, approve is not None, reject is not None]) > 1:
        raise typer.BadParameter("use one of --list, --approve ID and --reject ID")
    if text is not None and approve is None:
        raise typer.BadParameter("--text goes with --approve ID")
    settings = load_settings()
    with opened_store(settings) as store:
        desk = ReviewDesk(
            store, reviewer or f"console:{getpass.getuser()}", audit=store, memory=build_memory(settings, store)
        )
        try:
            if list_:
                wanted = None if status is ReviewStatus.all else CorrectionStatus(status.value)
                found = desk.corrections(wanted)
                if as_json:
                    typer.echo(
                        _terminal_safe(
                            json.dumps([desk.as_json(c) for c in found], ensure_ascii=False, indent=2)
                        )
                    )
                else:
                    typer.echo("\n\n".join(desk.show(c) for c in found) or f"No {status.value} corrections.")
            elif approve is not None or reject is not None:
                chosen = approve if approve is not None else reject
                assert chosen is not None
                decided, note = desk.decide(chosen, approve is not None, text)
                typer.echo(
                    _terminal_safe(json.dumps(desk.as_json(decided), ensure_ascii=False)) if as_json else note
                )
            else:
                desk.run(_prompt, lambda line: typer.echo(line, nl=False))
        except ReviewError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None


def _terminal_safe(text: str) -> str:
    """JSON with the characters a terminal would act on (ANSI escapes, bidi overrides) as \\u escapes.

    The same JSON to a parser, every character kept; only how it is written changes.
    """
    from bots.render import printable

    return "".join(char if printable(char) == char else _json_escape(char) for char in text)


def _json_escape(char: str) -> str:
    units = char.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(units[i : i + 2]):04x}" for i in range(0, len(units), 2))


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
    from finetune.copies import NotACopy, record_copy
    from finetune.feedback import Pseudonyms, export_feedback

    settings = load_settings()
    try:  # first: /forget must find even a half-written one
        record_copy(settings.data_dir, out, "feedback export")
    except NotACopy as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    manifest = export_feedback(
        database_url(settings),
        out,
        since=_moment(since),
        until=_moment(until, end=True),
        scrub=settings.feedback.scrub if scrub is None else scrub,
        consent=(consent.value if consent else settings.feedback.consent),
        context_turns=settings.feedback.context_turns,
        pseudonyms=Pseudonyms.of_deployment(settings.data_dir),
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
    from bots.app import opened_store
    from core.domain import AuditAction, Person

    person = Person(platform, user_id)
    consent = {Answer.yes: True, Answer.no: False, Answer.unset: None}[answer]
    with opened_store(load_settings()) as store:
        store.set_consent(person, consent)
        store.record_audit(
            f"console:{getpass.getuser()}", AuditAction.CONSENT, person.actor, {"consent": consent}
        )
    typer.echo(f"{platform}:{user_id} consent {answer.value}")


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
    from finetune.dataset import build_dataset
    from finetune.finetome import FineTomeUnavailable

    settings = load_settings()
    given: dict[str, Any] = {
        "min_score": min_score,
        "feedback_oversample": oversample,
        "person_cap": person_cap,
        "eval_fraction": eval_fraction,
        "seed": seed,
    }
    config = replace(settings.dataset, **{name: value for name, value in given.items() if value is not None})
    if sample_size is not None:
        config = replace(config, sample_size=sample_size or None)  # 0: every row
    source = finetome or config.finetome
    from finetune.feedback import Pseudonyms

    if not no_feedback:
        from finetune.copies import NotACopy, record_copy

        try:
            record_copy(settings.data_dir, out, "dataset build")
        except NotACopy as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(2) from None
    try:
        report = build_dataset(
            source,
            out,
            database_url=None if no_feedback or feedback else database_url(settings),
            feedback_dir=None if no_feedback else feedback,
            config=config,
            feedback=settings.feedback,
            pseudonyms=Pseudonyms.of_deployment(settings.data_dir),
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
