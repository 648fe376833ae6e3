"""Platform updates in the database before they are acknowledged: ``core.ports.Inbox`` on SQLAlchemy.

Several ``iris run`` processes on one PostgreSQL (or one process on SQLite) claim
from the same table. A claim is a conditional UPDATE of one row, so two processes
never hold one item; ordering comes from the claim's condition (no unfinished
earlier item with the same order key), and a stopped process's items come back
when their lease runs out. No extra server: the database is the queue. Urgent items
(presses, commands) are claimed by a query of their own, so a full queue of messages
never holds them.

Each claim adds one to the row's ``attempts``. After ``max_attempts`` claims an item is
not claimed again; once its last lease has run out too, ``set_aside`` marks it failed
(``failed_at``, and ``done_at`` so that the items behind it go on).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from sqlalchemy import Engine, and_, delete, exists, func, null, or_, select, update
from sqlalchemy.orm import aliased

from core.ports import InboxItem
from storage.database import dialect_insert, session_factory
from storage.tables import InboxRow, utcnow

KEEP_DONE = timedelta(days=1)  # handled ids are kept this long against a platform's redelivery
PURGE_EVERY_S = 600.0


class SqlInbox:
    def __init__(self, engine: Engine, max_attempts: int = 3) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.engine = engine
        self.max_attempts = max_attempts  # claims of one item before it is set aside
        self._sessions = session_factory(engine)
        self._purged_at = -PURGE_EVERY_S

    def put(
        self, platform: str, update_id: str, order_key: str, payload: Mapping[str, object], urgent: bool = False
    ) -> bool:
        with self._sessions.begin() as session:
            insert = dialect_insert(session, InboxRow).values(
                platform=platform,
                update_id=update_id,
                order_key=order_key,
                payload=dict(payload),
                received_at=utcnow(),
                attempts=0,
                urgent=urgent,
            )
            stored = session.execute(
                insert.on_conflict_do_nothing(index_elements=[InboxRow.platform, InboxRow.update_id]).returning(
                    InboxRow.id
                )
            ).first()
            return stored is not None

    def claim(
        self, platform: str, owner: str, lease_s: float, limit: int, urgent: bool = False
    ) -> list[InboxItem]:
        self._purge(platform)
        now = utcnow()
        free = and_(
            or_(InboxRow.lease_until.is_(None), InboxRow.lease_until < now),
            InboxRow.attempts < self.max_attempts,
        )
        earlier = aliased(InboxRow)
        waiting = (
            select(InboxRow.id)
            .where(
                InboxRow.platform == platform,
                InboxRow.done_at.is_(None),
                InboxRow.urgent == urgent,  # each kind against its own bound: presses never wait for notes
                free,
                ~exists().where(
                    earlier.platform == platform,
                    earlier.order_key == InboxRow.order_key,
                    earlier.done_at.is_(None),
                    earlier.id < InboxRow.id,
                ),
            )
            .order_by(InboxRow.id)
            .limit(limit)
        )
        claimed: list[InboxItem] = []
        with self._sessions.begin() as session:
            ids = list(session.scalars(waiting))
        for item_id in ids:  # one short transaction each: a process claims what it can, others go on
            with self._sessions.begin() as session:
                row = session.execute(
                    update(InboxRow)
                    .where(InboxRow.id == item_id, InboxRow.done_at.is_(None), free)
                    .values(
                        claimed_by=owner,
                        lease_until=now + timedelta(seconds=lease_s),
                        attempts=InboxRow.attempts + 1,
                    )
                    .returning(InboxRow.id, InboxRow.payload, InboxRow.attempts, InboxRow.shown)
                ).first()
            if row is not None:
                claimed.append(InboxItem(row.id, dict(row.payload), row.attempts, dict(row.shown or {})))
        return claimed

    def set_aside(self, platform: str) -> list[InboxItem]:
        now = utcnow()
        spent = and_(
            InboxRow.platform == platform,
            InboxRow.done_at.is_(None),
            InboxRow.attempts >= self.max_attempts,
            InboxRow.lease_until < now,
        )
        with self._sessions.begin() as session:
            # The payload is read before the update: RETURNING would give the emptied one.
            rows = session.execute(select(InboxRow.id, InboxRow.payload, InboxRow.attempts).where(spent)).all()
        failed: list[InboxItem] = []
        for row in rows:  # a conditional update each: of several processes, one reports it
            with self._sessions.begin() as session:
                marked = session.execute(
                    update(InboxRow)
                    .where(InboxRow.id == row.id, spent)
                    .values(done_at=now, failed_at=now, payload={}, shown=null(), lease_until=None)
                    .returning(InboxRow.id)
                ).first()
            if marked is not None:
                failed.append(InboxItem(row.id, dict(row.payload), row.attempts))
        return failed

    def renew(self, owner: str, item_ids: Sequence[int], lease_s: float) -> None:
        if not item_ids:
            return
        with self._sessions.begin() as session:
            session.execute(
                update(InboxRow)
                .where(
                    InboxRow.id.in_(list(item_ids)), InboxRow.claimed_by == owner, InboxRow.done_at.is_(None)
                )
                .values(lease_until=utcnow() + timedelta(seconds=lease_s))
            )

    def done(self, item_id: int) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(InboxRow)
                .where(InboxRow.id == item_id)
                .values(done_at=utcnow(), payload={}, shown=null(), lease_until=None)
            )

    def note_shown(self, owner: str, item_id: int, shown: Mapping[str, list[int]]) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(InboxRow)
                .where(InboxRow.id == item_id, InboxRow.claimed_by == owner, InboxRow.done_at.is_(None))
                .values(shown={kind: list(ids) for kind, ids in shown.items()})
            )

    def _purge(self, platform: str) -> None:
        """Drop the ids handled more than ``KEEP_DONE`` ago; at most every ``PURGE_EVERY_S``, not per update."""
        if time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = time.monotonic()
        old = and_(InboxRow.platform == platform, InboxRow.done_at < utcnow() - KEEP_DONE)
        with self._sessions.begin() as session:
            session.execute(delete(InboxRow).where(old))

    def pending(self, platform: str) -> int:
        """How many updates wait or are being handled (for tests and the logs)."""
        with self._sessions.begin() as session:
            waiting = InboxRow.platform == platform, InboxRow.done_at.is_(None)
            return session.scalar(select(func.count()).select_from(InboxRow).where(*waiting)) or 0
