"""``iris audit`` and ``iris db prune``: the audit trail, and applying the retention period by hand."""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import replace
from typing import Annotated

import typer

from bots.app import load_settings
from bots.cli_feedback import _moment
from bots.render import audit_line
from core.audit import prune_details, retention_cutoff
from core.domain import AuditAction


def audit(
    since: Annotated[
        str | None, typer.Option(help="Entries from this date or time on (UTC unless it says).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per entry, one per line.")] = False,
) -> None:
    """The audit trail: reviews, retrains, promotions, (re)activations, consent changes, /forget, prunes."""
    from bots.app import opened_store

    with opened_store(load_settings()) as store:
        entries = store.audit_entries(_moment(since))
    for entry in entries:
        if as_json:
            line = {
                "id": entry.id,
                "at": entry.at.isoformat(),
                "actor": entry.actor,
                "action": entry.action.value,
                "target": entry.target,
                "details": entry.details,
            }
            typer.echo(json.dumps(line, ensure_ascii=False, default=str))
        else:
            typer.echo(audit_line(entry))
    if not entries and not as_json:
        typer.echo(
            "The audit trail is empty." if since is None else f"Nothing in the audit trail since {since}."
        )


def db_prune(
    dry_run: Annotated[bool, typer.Option(help="Count what would go; delete nothing.")] = False,
) -> None:
    """Delete conversations past IRIS_CHAT_RETENTION_DAYS; consented ones with feedback stay, anonymous."""
    from bots.app import opened_store, retrain_dir
    from finetune.copies import CopyEraser

    settings = load_settings()
    if settings.chat.retention_days <= 0:
        typer.echo(
            "IRIS_CHAT_RETENTION_DAYS is not set: conversations are kept until people use /forget.", err=True
        )
        raise typer.Exit(2)
    cutoff = retention_cutoff(time.time(), settings.chat.retention_days)
    with opened_store(settings) as store:
        report = store.prune(cutoff, dry_run)
        if not dry_run and report.conversation_ids:
            eraser = CopyEraser(settings.data_dir, retrain_dir(settings))
            report = replace(report, copies=eraser.erase(None, conversation_ids=report.conversation_ids))
        if not dry_run:
            details = prune_details(report, settings.chat.retention_days)
            store.record_audit(f"console:{getpass.getuser()}", AuditAction.PRUNE, None, details)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"Older than {settings.chat.retention_days:g} days (before {report.cutoff:%Y-%m-%d %H:%M} UTC): {verb} "
        f"{report.conversations} conversations, {report.turns} messages, {report.ratings} ratings, "
        f"{report.corrections} corrections and {report.people} people; "
        f"{'would keep' if dry_run else 'kept'} {report.kept_for_training} consented conversations "
        "as training data without identity."
    )
    if report.copies is not None:
        typer.echo(
            f"Also took their words out of {report.copies.files} files of training data "
            f"({report.copies.rows} examples)"
            + (
                f"; could not reach: {', '.join(report.copies.unreachable)}"
                if report.copies.unreachable
                else "."
            )
        )
