"""``IRIS_WEB_*``: the web console's settings (standard library and pydantic only)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr


@dataclass(frozen=True)
class WebConfig:
    # `iris run` serves the console too when a port is set; `iris web` takes --host/--port.
    port: int | None = None
    host: str = "127.0.0.1"  # loopback: a reverse proxy on this machine brings it further (docs/web.md)
    # The sign-in token; unset: a random one, printed once in the sign-in link on start.
    token: SecretStr | None = None
    admin_name: str = "admin"  # decisions are audited as web:<admin_name>
    # Behind an https reverse proxy: the session cookie is only sent over https.
    secure_cookie: bool = False
    session_hours: float = 12.0  # a signed-in session lasts this long
    page_size: int = 20  # corrections per review page


def console_url(host: str, port: int) -> str:
    """The console's address as an admin on this machine opens it (a wildcard host: loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"
