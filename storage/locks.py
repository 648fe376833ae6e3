"""A lock all Iris processes on one PostgreSQL share (one retrain at a time, across machines)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text


class LockHeld(RuntimeError):
    """Another process holds the lock."""


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
    key = int.from_bytes(hashlib.sha256(f"iris:{name}".encode()).digest()[:8], "big", signed=True)
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
