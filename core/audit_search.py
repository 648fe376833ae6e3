"""Searching the audit trail (the console's Audit page): newest first, a page at a time.

A page is the entries before a given id (keyset paging), so a trail of a million lines is
never read whole, and a page stays the same while new lines are written above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.domain import AuditAction, AuditEntry


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None  # exactly, e.g. "web:admin", "telegram:42", "forgotten:…"
    action: AuditAction | None = None
    text: str | None = None  # anywhere in the target or the details, case-insensitive
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    before: int | None = None  # the page: entries with a smaller id
    limit: int = 50


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]  # newest first
    next_before: int | None  # the id to page on from; None on the last page


class AuditSearch(Protocol):
    def search_audit(self, query: AuditQuery) -> AuditPage: ...
