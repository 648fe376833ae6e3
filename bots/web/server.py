"""The console's web app (Starlette) and serving it with uvicorn, alone or beside the bots."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import sys
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bots.web import audit, people, retrain, try_it, watch
from bots.web.auth import Gate, admin_only, client
from bots.web.config import WebConfig, console_url
from bots.web.pages import STATIC, SecurityHeaders, render
from bots.web.review import decide, review_page

if TYPE_CHECKING:
    import uvicorn

    from bots.web.records import Records
    from core.review_queue import ReviewQueue
    from core.service import ChatService
    from core.web_admins import WebAdmins

log = logging.getLogger(__name__)


async def home(request: Request) -> Response:
    """``/?token=…`` signs in and drops the token from the address; ``/`` goes to the review."""
    gate: Gate = request.app.state.gate
    given = request.query_params.get("token")
    if given is None:
        return RedirectResponse("/review" if await gate.session(request) else "/signin", status_code=303)
    signer = await gate.signer(given)
    if signer is None:
        log.warning("refused a sign-in from %s: wrong token", client(request))
        return render(request, "signin.html", {"refused": True}, status_code=403)
    response = RedirectResponse("/review", status_code=303)
    gate.open_session(response, signer)
    log.info("web:%s signed in from %s", signer.name, client(request))
    return response


async def sign_in_page(request: Request) -> Response:
    return render(request, "signin.html", {"refused": False})


@admin_only
async def sign_out(request: Request) -> Response:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie("iris_session", path="/")
    return response


def create_app(
    service: ChatService,
    queue: ReviewQueue,
    config: WebConfig,
    token: str,
    records: Records | None = None,
    admins: WebAdmins | None = None,
) -> Starlette:
    """The console; ``records`` (``bots.app.console_records``) backs the Watch, Audit and People pages,
    ``admins`` the admins' own sign-in links (``iris web admin add``; None: the token alone)."""
    routes = [
        Route("/", home),
        Route("/signin", sign_in_page),
        Route("/signout", sign_out, methods=["POST"]),
        Route("/review", review_page),
        Route("/review/{correction_id:int}", decide, methods=["POST"]),
        *try_it.routes(),
        *retrain.routes(),
        *((*watch.routes(), *audit.routes(), *people.routes()) if records is not None else ()),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.service = service
    app.state.queue = queue
    app.state.records = records
    app.state.config = config
    app.state.gate = Gate(token, config, admins)
    return app


def sign_in_token(config: WebConfig) -> tuple[str, bool]:
    """IRIS_WEB_TOKEN, or a random one when unset; and whether it was made up here."""
    given = config.token.get_secret_value() if config.token else ""
    return (given, False) if given else (secrets.token_urlsafe(32), True)


def announce(host: str, port: int, token: str, generated: bool) -> None:
    """Say where to sign in, on stderr: with the token only when it was made up here (as Jupyter does).

    Printed, never logged: the log may be kept or shipped elsewhere.
    """
    address = console_url(host, port)
    if generated:
        link = f"{address}/?token={token}"
        print(
            f"Iris web console: sign in with this link (the token changes at each start):\n    {link}",
            file=sys.stderr,
        )
    else:
        print(f"Iris web console on {address}/ (sign in with ?token=IRIS_WEB_TOKEN)", file=sys.stderr)
    sys.stderr.flush()


class _Embedded:
    """uvicorn without its own signal handlers: whoever runs it stops it by cancelling (Ctrl+C
    through ``asyncio.run``), and it then closes its connections before the cancel goes on."""

    def __init__(self, server: uvicorn.Server, listening: socket.socket) -> None:
        self.server = server
        self.listening = listening

    async def run(self) -> None:
        # serve() would capture SIGINT/SIGTERM for itself; _serve() is the same without that.
        serving = asyncio.ensure_future(self.server._serve(sockets=[self.listening]))
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            self.server.should_exit = True
            await serving
            raise
        if self.server.should_exit and not self.server.started:  # the port could not be opened
            raise OSError(
                f"the web console could not listen on {self.server.config.host}:{self.server.config.port}"
            )


async def serve_web(
    service: ChatService,
    queue: ReviewQueue,
    config: WebConfig,
    host: str,
    port: int,
    records: Records | None = None,
    admins: WebAdmins | None = None,
) -> None:
    """Serve the console until cancelled."""
    import uvicorn

    token, generated = sign_in_token(config)
    app = create_app(service, queue, config, token, records, admins)
    listening = _listen(host, port)  # here, not in uvicorn: it would sys.exit on a port in use
    # No access log: the sign-in link's token is in its query string.
    settings = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning", lifespan="off")
    server = uvicorn.Server(settings)
    announcing = asyncio.ensure_future(_announce_when_started(server, host, port, token, generated))
    try:
        await _Embedded(server, listening).run()
    finally:
        announcing.cancel()
        listening.close()


def _listen(host: str, port: int) -> socket.socket:
    """The console's listening socket; OSError with a sentence when the address cannot be had."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise OSError(f"the web console cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listening


async def _announce_when_started(
    server: uvicorn.Server, host: str, port: int, token: str, generated: bool
) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    announce(host, port, token, generated)
