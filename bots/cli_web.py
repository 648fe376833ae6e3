"""``iris web``: the admins' web console (docs/web.md), and ``iris web admin``: who signs in to it.

Each admin added here gets a sign-in link of their own, printed once (only a hash of its token
is stored), so the audit trail names them (``web:<name>``) for what they decide in the console.
IRIS_WEB_TOKEN, or the token ``iris web`` prints at start, still signs in as IRIS_WEB_ADMIN_NAME.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated

import typer

from bots.app import load_settings, opened_store
from bots.cli_models import console_actor
from bots.stopping import run_until_terminated
from bots.web.config import console_url
from core.domain import AuditAction
from core.web_admins import AdminNameTaken, BadAdminName, add_admin

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from storage.web_admins import SqlWebAdmins

log = logging.getLogger(__name__)

web_app = typer.Typer(invoke_without_command=True)
admin_app = typer.Typer(
    help="The console's admins, each signing in with a link of their own.", no_args_is_help=True
)
web_app.add_typer(admin_app, name="admin")


@web_app.callback()
def web(
    context: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default IRIS_WEB_HOST: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default IRIS_WEB_PORT, else 8080).", min=1, max=65535)
    ] = None,
) -> None:
    """The admins' web console: review corrections in the browser (docs/web.md);
    `iris web admin` gives each admin a sign-in link of their own."""
    if context.invoked_subcommand is not None:
        return
    from bots.app import build_app, serve_web

    application = build_app(load_settings())  # models load lazily: reviewing never touches them
    try:
        run_until_terminated(serve_web(application, host, port))
    finally:
        application.close()


def _admins(engine: Engine) -> SqlWebAdmins:
    from storage.web_admins import SqlWebAdmins

    return SqlWebAdmins(engine)


@admin_app.command("add")
def admin_add(
    name: Annotated[str, typer.Argument(help="How the audit trail names them: web:NAME.")],
    url: Annotated[
        str | None,
        typer.Option(
            help="The console's address as they open it (behind a proxy: https://iris.example.org); "
            "default http://IRIS_WEB_HOST:IRIS_WEB_PORT."
        ),
    ] = None,
) -> None:
    """Add an admin and print their sign-in link, this once: only a hash of its token is kept."""
    if url is not None and not url.startswith(("http://", "https://")):
        typer.echo("not added: --url must start with http:// or https://", err=True)
        raise typer.Exit(1)
    settings = load_settings()
    with opened_store(settings) as store:
        try:
            admin, token = add_admin(_admins(store.engine), name, console_actor(), settings.web.admin_name)
        except (BadAdminName, AdminNameTaken) as error:
            typer.echo(f"not added: {error}", err=True)
            raise typer.Exit(1) from None
        store.record_audit(console_actor(), AuditAction.WEB_ADMIN_ADD, f"web:{admin.name}")
    base = (url or console_url(settings.web.host, settings.web.port or 8080)).rstrip("/")
    typer.echo(
        f"Sign-in link for web:{admin.name}, shown this once (keep it secret; "
        f"`iris web admin remove {admin.name}` ends it):",
        err=True,
    )
    typer.echo(f"{base}/?token={token}")


@admin_app.command("list")
def admin_list(as_json: Annotated[bool, typer.Option("--json", help="One JSON list.")] = False) -> None:
    """The admins with a sign-in link of their own (their tokens are not kept, so not shown)."""
    settings = load_settings()
    with opened_store(settings) as store:
        admins = _admins(store.engine).list_admins()
    if as_json:
        rows = [
            {"name": a.name, "created_at": a.created_at.isoformat(), "created_by": a.created_by} for a in admins
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for admin in admins:
        typer.echo(
            f"web:{admin.name} · added {admin.created_at:%Y-%m-%d %H:%M} UTC by {admin.created_by or '?'}"
        )
    token_admin = f"web:{settings.web.admin_name}"
    typer.echo(
        f"{len(admins)} admin(s) with their own link; IRIS_WEB_TOKEN signs in as {token_admin}.", err=True
    )


@admin_app.command("remove")
def admin_remove(
    name: Annotated[str, typer.Argument(help="The admin's name, as `iris web admin list` shows it.")],
) -> None:
    """Remove an admin: their link stops signing in, and their open sessions end at their next request."""
    with opened_store(load_settings()) as store:
        if not _admins(store.engine).remove_admin(name):
            typer.echo(f"not removed: no admin is named {name!r} (`iris web admin list` shows them).", err=True)
            raise typer.Exit(1)
        store.record_audit(console_actor(), AuditAction.WEB_ADMIN_REMOVE, f"web:{name}")
    typer.echo(
        f"removed web:{name}: their link no longer signs in, and their sessions end at their next request"
    )
