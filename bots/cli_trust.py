"""``iris audit``: the audit trail of admin actions, consent changes and /forgets."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bots.app import load_settings
from bots.cli_feedback import _moment
from bots.render import audit_line


def audit(
    since: Annotated[
        str | None, typer.Option(help="Entries from this date or time on (UTC unless it says).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per entry, one per line.")] = False,
) -> None:
    """The audit trail: reviews, retrains, promotions, (re)activations, consent changes and /forgets."""
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
