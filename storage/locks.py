"""A lock all Iris processes on one PostgreSQL share (one retrain at a time, across machines)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, false, text, update
from sqlalchemy.orm import Session


class LockHeld(RuntimeError):
    """Another process holds the lock."""


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"iris:{name}".encode()).digest()[:8], "big", signed=True)


def serialize(session: Session, table: Any) -> None:
    """Make the transactions that change ``table`` run one after another; call it first thing.

    Without it two admins' transactions both read the same old state (the same default, the
    same version) and the second either fails on a unique index or overwrites the first. On
    PostgreSQL a transaction-level advisory lock: the second waits for the first to commit, then
    reads what it wrote (READ COMMITTED). On SQLite a write that changes nothing, so that the
    transaction holds the one write lock (and a fresh snapshot) before it reads anything.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _key(table.__tablename__)})
    else:
        session.execute(update(table).where(false()).values(id=table.id))


@contextmanager
def database_lock(engine: Engine, name: str, wait: bool = False) -> Iterator[None]:
    """Hold ``name`` for the block; if another process holds it, wait (``wait``) or raise ``LockHeld``.

    On PostgreSQL a session advisory lock on a connection kept for the block: a process
    that dies loses its connection and with it the lock, so nothing is left stale. On
    SQLite, which one machine serves, there is nothing to share: the caller's lock file
    (``finetune.runs.exclusive``) covers it.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    key = _key(name)
    with engine.connect() as connection:
        if wait:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        elif not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            raise LockHeld(f"{name} is held by another Iris process")
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
