"""Searching the audit trail (``core.audit_search``): newest first, keyset pages of one query each.

The details are JSON, searched as their stored text. The engine now writes JSON with non-ASCII
characters as they are (``storage.database.readable_json``), but lines written before hold
``\\u00e9`` for "é", and a quote is always stored as ``\\"``: so the words are also looked for
as JSON escapes them. SQLite's ``lower()`` folds ASCII letters only, so a non-ASCII word is
also looked for in lower and upper case ("é" finds "É").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Engine, String, cast, or_, select

from core.audit_search import AuditPage, AuditQuery
from core.domain import AuditAction, AuditEntry
from storage.database import session_factory
from storage.mapping import aware
from storage.tables import AuditRow


class SqlAuditSearch:
    def __init__(self, engine: Engine) -> None:
        self._sessions = session_factory(engine)

    def search_audit(self, query: AuditQuery) -> AuditPage:
        conditions = []
        if query.actor:
            conditions.append(AuditRow.actor == query.actor)
        if query.action is not None:
            conditions.append(AuditRow.action == query.action.value)
        if query.text:
            conditions.append(_words(query.text))
        if query.since is not None:
            conditions.append(AuditRow.at >= _utc(query.since))
        if query.until is not None:
            conditions.append(AuditRow.at < _utc(query.until))
        if query.before is not None:
            conditions.append(AuditRow.id < query.before)
        statement = select(AuditRow).where(*conditions).order_by(AuditRow.id.desc()).limit(query.limit + 1)
        with self._sessions() as session:
            rows = session.scalars(statement).all()
        entries = [_entry(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return AuditPage(entries, entries[-1].id if more and entries else None)


def _words(text: str) -> ColumnElement[bool]:
    """``text`` anywhere in the target or in the details' JSON text (SQLite keeps it so; PostgreSQL
    casts it), case-insensitive; autoescape: a % or _ typed is matched as itself."""
    cases = _distinct([text, text.lower(), text.upper()])
    escaped = [(case, _escaped(case, ascii_only=False), _escaped(case, ascii_only=True)) for case in cases]
    in_details = _distinct([form for forms in escaped for form in forms])
    details = cast(AuditRow.details, String)
    return or_(
        *(AuditRow.target.icontains(case, autoescape=True) for case in cases),
        *(details.icontains(form, autoescape=True) for form in in_details),
    )


def _escaped(text: str, ascii_only: bool) -> str:
    """``text`` as it reads inside a JSON string: quotes and backslashes escaped, and with
    ``ascii_only`` every non-ASCII character as ``\\uXXXX`` (how older lines were stored)."""
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]


def _distinct(forms: list[str]) -> list[str]:
    """The forms that differ once the database lowers their ASCII letters (as it does for all)."""
    kept: dict[str, str] = {}
    for form in forms:
        kept.setdefault("".join(c.lower() if c.isascii() else c for c in form), form)
    return list(kept.values())


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=aware(row.at),
        actor=row.actor,
        action=AuditAction(row.action),
        target=row.target,
        details=dict(row.details or {}),
    )
