"""Sign-in, sessions and CSRF for the console.

The sign-in link carries the token once; its session is a signed cookie (itsdangerous, keyed
by a key derived from the token, so a new token ends every session) that expires, and holds
the per-session CSRF token every POST must send back (a form field, or htmx's header).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from bots.web.config import WebConfig

log = logging.getLogger(__name__)

COOKIE = "iris_session"
CSRF_HEADER = "x-csrf-token"
SIGN_IN_FIRST = "Sign in first: open the sign-in link printed when the console started."
CSRF_REFUSED = "This form is stale or did not come from this console (CSRF check failed); reload the page."

Endpoint = Callable[[Request], Awaitable[Response]]


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

    def __init__(self, token: str, config: WebConfig) -> None:
        self._token = token.encode()
        self.config = config
        key = hmac.new(self._token, b"iris-web-session", hashlib.sha256).digest()
        self._serializer = URLSafeTimedSerializer(key, salt="iris-web-session")

    @property
    def max_age(self) -> int:
        return max(60, int(self.config.session_hours * 3600))

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)  # constant time

    def open_session(self, response: Response) -> Session:
        session = Session(self.config.admin_name, secrets.token_urlsafe(32))
        cookie = self._serializer.dumps({"name": session.name, "csrf": session.csrf})
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

    def session(self, request: Request) -> Session | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # forged, from another token, or expired (SignatureExpired)
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("name", "csrf")):
            return None
        return Session(data["name"], data["csrf"])


def client(request: Request) -> str:
    return request.client.host if request.client else "?"


def admin_only(endpoint: Endpoint) -> Endpoint:
    """Refuse a request without a session (GET: to the sign-in page; else 403) or a POST without
    the session's CSRF token; the session is ``request.state.session`` in the endpoint."""

    async def guarded(request: Request) -> Response:
        gate: Gate = request.app.state.gate
        session = gate.session(request)
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
