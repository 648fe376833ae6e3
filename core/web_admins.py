"""The web console's admins, each signing in with a link of their own (``iris web admin add NAME``).

A team shares one console, and the audit trail must say which of them decided
(``web:<name>``), so each admin gets their own random sign-in token. Only a hash of it is
stored: the tokens are 32 random bytes, so SHA-256 alone (no salt, no stretching) makes a copy
of the database useless for signing in, and lets a sign-in find its admin in one indexed look-up.

Each admin also has a random session key, written into their session cookie: removing the
admin deletes the key, so a session they opened is refused at its next request in every
process on the database (the console checks the key at each request).
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

NAME_MAX = 32  # characters: the name is shown in every audit line as web:<name>


class BadAdminName(ValueError):
    """A name refused by ``checked_name``; its message is one line for the admin."""


class AdminNameTaken(ValueError):
    """An admin of that name (in any case) already exists."""


@dataclass(frozen=True)
class WebAdmin:
    id: int
    name: str
    session_key: str  # in the admin's session cookies; gone with the admin
    created_at: datetime
    created_by: str | None  # who ran `iris web admin add`, as the audit trail names them


class WebAdmins(Protocol):
    """Where the admins are kept: the database, so every process on it sees an added or removed one."""

    def add_admin(self, name: str, token_hash: str, session_key: str, created_by: str) -> WebAdmin:
        """A new admin; AdminNameTaken when the name (compared case-insensitively) is in use."""
        ...

    def remove_admin(self, name: str) -> bool:
        """Remove the admin of exactly that name; False when there was none."""
        ...

    def list_admins(self) -> list[WebAdmin]:
        """Every admin, oldest first."""
        ...

    def admin_by_token(self, token_hash: str) -> WebAdmin | None:
        """The admin whose sign-in token hashes to ``token_hash``."""
        ...

    def admin_by_session(self, admin_id: int, session_key: str) -> WebAdmin | None:
        """The admin a session cookie names, if they still exist with that key."""
        ...


def new_token() -> str:
    """A sign-in token: 32 random bytes, URL-safe (it travels in the link's query string)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def checked_name(name: str) -> str:
    """The name, NFC-normalized, or BadAdminName saying in one line why it cannot be one.

    A name is read in audit lines, logs and terminals: no spaces, no control, format (bidi,
    zero-width) or unassigned characters, which could hide or reorder what an admin reads.
    """
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise BadAdminName("An admin's name cannot be empty.")
    if len(name) > NAME_MAX:
        raise BadAdminName(f"An admin's name has at most {NAME_MAX} characters ({len(name)} given).")
    for char in name:
        if char.isspace() or unicodedata.category(char)[0] in "CZ":
            raise BadAdminName(
                f"An admin's name cannot hold spaces or invisible characters (U+{ord(char):04X} found); "
                "use letters, digits and signs such as . _ - @."
            )
    return name


def same_name(one: str, other: str) -> bool:
    """Whether two names would read as one admin's in the audit trail (case-insensitively)."""
    return one.casefold() == other.casefold()


def add_admin(admins: WebAdmins, name: str, created_by: str, reserved: str) -> tuple[WebAdmin, str]:
    """Add an admin; their new admin and sign-in token (shown once: only its hash is kept).

    ``reserved`` is the name the deployment's own token (IRIS_WEB_TOKEN) signs in as: another
    admin under it would be audited alike, so it is refused (BadAdminName), as a bad name is.
    """
    name = checked_name(name)
    if same_name(name, reserved):
        raise BadAdminName(
            f"{name!r} is the name IRIS_WEB_TOKEN signs in as (IRIS_WEB_ADMIN_NAME); choose another."
        )
    token = new_token()
    admin = admins.add_admin(name, token_hash(token), secrets.token_urlsafe(16), created_by)
    return admin, token
