"""Engines and sessions: SQLite by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from core.domain import storable_text

# How long a write waits for another writer before SQLite reports "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30


def sqlite_url(data_dir: Path) -> str:
    """The default database: ``iris.db`` in the data directory (made readable by its owner only)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'iris.db').resolve()}"


def readable_json(value: Any) -> str:
    """JSON columns' text: non-ASCII characters as they are, not ``\\uXXXX`` escapes, so that a
    search of the stored text (the console's Audit page) finds "é" as typed.

    A string that is not valid Unicode (a lone surrogate) cannot be stored as UTF-8: that value
    keeps its escapes, as every value had before.
    """
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with SQLite set up for a bot: WAL journal, foreign keys enforced, patient locks;
    JSON written by ``readable_json``; every text written as any database can store it
    (``_storable_parameters``); no value of a failed statement in its error.

    A SQLite file that does not exist yet is created readable and writable by its owner only.
    """
    kwargs.setdefault("json_serializer", readable_json)
    # A failed statement's error names the statement, not its values: people's words, names and
    # corrections stay out of the log, where /forget and retention cannot reach them.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
    event.listen(engine, "before_cursor_execute", _storable_parameters, retval=True)
    return engine


def _storable_parameters(
    _connection: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _executemany: bool
) -> tuple[str, Any]:
    """Every string a statement sends, lone surrogates and NULs replaced (``core.domain.storable_text``).

    A lone surrogate makes SQLite and PostgreSQL refuse the whole row, a NUL PostgreSQL: a
    person's message, a name or a correction would be lost, and sending it again could never
    succeed. Whatever path the text came by (a chat, the command line, the web console), it is
    stored with U+FFFD in place of what cannot be written, and everything else in it is kept.
    """
    return statement, _storable(parameters)


def _storable(value: Any) -> Any:
    # Parameters come in every shape a driver takes: a mapping or a sequence for one row, a list
    # of them for executemany, and one mapping for many rows when SQLAlchemy batches an insert
    # into one statement ("insertmanyvalues", which still says executemany). So the shape decides.
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_storable(item) for item in value)
    return value


def _create_private(database: str | None) -> None:
    # SQLite creates its file 0644 less the umask, and gives the -wal and -shm files the mode of
    # the database file: an empty file made 0600 first (a valid empty database) keeps all three
    # private, whatever the umask. An existing file keeps the mode its owner gave it; a file that
    # cannot be made here is left for SQLite to report on connecting, as before.
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(OSError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (stats, exports) run while the bot writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted rows are overwritten, not left in free pages: /forget and retention
    # must not leave a person's words readable in the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def dialect_insert(session: Session, table: Any) -> sqlite.Insert | postgresql.Insert:
    """An INSERT for ``table`` in the session's dialect, which can say ``ON CONFLICT`` (an upsert).

    Both dialects spell upserts alike (``on_conflict_do_update``/``_do_nothing``,
    ``excluded``, ``returning``); SQLite needs 3.35 or later for ``RETURNING``.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for the {dialect} dialect: Iris stores to SQLite or PostgreSQL")


def truncate_journal(engine: Engine) -> None:
    """Write SQLite's WAL back into the database and empty it, so that no old page stays in it."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
