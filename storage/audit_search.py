"""Searching the audit trail (``core.audit_search``): newest first, keyset pages of one query each."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, String, cast, or_, select

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
            # The details are JSON: searched as their text (SQLite keeps it so; PostgreSQL casts it).
            # autoescape: a % or _ in what the admin typed is matched as itself.
            conditions.append(
                or_(
                    AuditRow.target.icontains(query.text, autoescape=True),
                    cast(AuditRow.details, String).icontains(query.text, autoescape=True),
                )
            )
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
