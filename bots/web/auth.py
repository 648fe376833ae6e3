"""Sign-in, sessions and CSRF for the console.

The sign-in link carries the token once: the deployment's (IRIS_WEB_TOKEN, or the one printed
at start), signing in as IRIS_WEB_ADMIN_NAME, or an admin's own (``iris web admin add NAME``,
``core.web_admins``). Its session is a signed cookie (itsdangerous, keyed by a key derived from
the deployment's token, so a new token ends every session) that expires, and holds who signed
in and the per-session CSRF token every POST must send back (a form field, or htmx's header).
An admin's session also holds their session key, checked in the database at each request, so
removing the admin ends their sessions in every process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from bots.web.config import WebConfig
from core.web_admins import WebAdmins, token_hash

log = logging.getLogger(__name__)

COOKIE = "iris_session"
CSRF_HEADER = "x-csrf-token"
SIGN_IN_FIRST = "Sign in first: open the sign-in link printed when the console started."
CSRF_REFUSED = "This form is stale or did not come from this console (CSRF check failed); reload the page."

Endpoint = Callable[[Request], Awaitable[Response]]
TOKEN_MAX = 256  # characters: longer is no token of ours, and is not hashed or looked up


@dataclass(frozen=True)
class Signer:
    """Who a sign-in token belongs to: an admin of their own link (``admin_id`` and ``key``), or
    the deployment's token (both None)."""

    name: str
    admin_id: int | None = None
    key: str | None = None


@dataclass(frozen=True)
class Session:
    name: str  # the admin, as audited: web:<name>
    csrf: str

    @property
    def actor(self) -> str:
        """How the audit trail names this admin."""
        return f"web:{self.name}"


class Gate:
    """Checks sign-in tokens and session cookies."""

    def __init__(self, token: str, config: WebConfig, admins: WebAdmins | None = None) -> None:
        self._token = token.encode()
        self.config = config
        self.admins = admins  # None: only the deployment's token signs in
        key = hmac.new(self._token, b"iris-web-session", hashlib.sha256).digest()
        self._serializer = URLSafeTimedSerializer(key, salt="iris-web-session")

    @property
    def max_age(self) -> int:
        return max(60, int(self.config.session_hours * 3600))

    async def signer(self, given: str) -> Signer | None:
        """Whom ``given`` signs in: the deployment's admin, an admin with a link of their own, or no one."""
        if hmac.compare_digest(given.encode(), self._token):  # constant time
            return Signer(self.config.admin_name)
        if self.admins is None or not given or len(given) > TOKEN_MAX:
            return None
        admin = await asyncio.to_thread(self.admins.admin_by_token, token_hash(given))
        return Signer(admin.name, admin.id, admin.session_key) if admin else None

    def open_session(self, response: Response, signer: Signer) -> Session:
        session = Session(signer.name, secrets.token_urlsafe(32))
        data: dict[str, object] = {"name": session.name, "csrf": session.csrf}
        if signer.admin_id is not None:
            data.update(admin=signer.admin_id, key=signer.key)
        cookie = self._serializer.dumps(data)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=self.max_age,
            httponly=True,
            samesite="strict",
            secure=self.config.secure_cookie,
            path="/",
        )
        return session

    async def session(self, request: Request) -> Session | None:
        """The request's session, or None: no cookie, a forged, expired or old-token one, or one of
        an admin removed (or removed and added again) since it was opened."""
        data = self._cookie(request)
        if data is None:
            return None
        admin_id, key = data.get("admin"), data.get("key")
        if admin_id is None:  # signed in with the deployment's token
            return Session(data["name"], data["csrf"])
        if self.admins is None or not isinstance(admin_id, int) or not isinstance(key, str):
            return None
        admin = await asyncio.to_thread(self.admins.admin_by_session, admin_id, key)
        return Session(admin.name, data["csrf"]) if admin else None

    def _cookie(self, request: Request) -> dict[str, Any] | None:
        """The session cookie's signed content (``name`` and ``csrf`` are str), or None."""
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # forged, from another token, or expired (SignatureExpired)
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("name", "csrf")):
            return None
        return data


def client(request: Request) -> str:
    return request.client.host if request.client else "?"


def admin_only(endpoint: Endpoint) -> Endpoint:
    """Refuse a request without a session (GET: to the sign-in page; else 403) or a POST without
    the session's CSRF token; the session is ``request.state.session`` in the endpoint."""

    async def guarded(request: Request) -> Response:
        gate: Gate = request.app.state.gate
        session = await gate.session(request)
        if session is None:
            if request.method in ("GET", "HEAD"):
                return RedirectResponse("/signin", status_code=303)
            return PlainTextResponse(SIGN_IN_FIRST, status_code=403)
        if request.method not in ("GET", "HEAD"):
            form = await request.form()  # kept on the request: the endpoint reads it again
            sent = request.headers.get(CSRF_HEADER) or form.get("csrf")
            if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                log.warning(
                    "refused a %s %s from %s: CSRF check failed",
                    request.method,
                    request.url.path,
                    client(request),
                )
                return PlainTextResponse(CSRF_REFUSED, status_code=403)
        request.state.session = session
        return await endpoint(request)

    return guarded
