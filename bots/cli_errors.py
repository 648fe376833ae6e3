"""What the ``iris`` command says when a command fails: one line, never a traceback."""

from __future__ import annotations

import errno

from pydantic import ValidationError

from bots.settings import RenamedSettings


def _variable(location: tuple[int | str, ...]) -> str:
    """The environment variable a validation error is about: ("llm", "parallel") is IRIS_LLM_PARALLEL."""
    parts = [str(part) for part in location]
    if not parts:
        return "settings"
    if parts[0].isupper():  # a name other tools spell: DATABASE_URL, TELEGRAM_BOT_TOKEN
        return parts[0]
    return "IRIS_" + "_".join(parts).upper()


def explain(error: Exception) -> str:
    """One line a person can act on, for an error no command caught itself."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, ValidationError):
        # Never the input value: a setting that fails validation may be a token.
        problems = "; ".join(f"{_variable(problem['loc'])}: {problem['msg']}" for problem in error.errors())
        return f"a setting is not valid ({problems}); see .env.example"
    if isinstance(error, RenamedSettings):
        return str(error)
    if isinstance(error, DBAPIError):
        reason = str(error.orig or error).strip().splitlines()[0]
        code = getattr(error.orig, "sqlite_errorname", "")  # SQLITE_FULL, SQLITE_IOERR_SHMSIZE, ...
        if code == "SQLITE_FULL" or "No space left" in reason:  # SQLite's, then PostgreSQL's words
            return f"the database's disk is full: {reason} (free some space; what it holds is kept)"
        if code.startswith(("SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")):
            # SQLite says "disk I/O error" when its disk is full before a write even starts.
            return f"the database cannot be used: {reason} ({code}: is its disk full or read-only?)"
        return f"the database cannot be used: {reason} (check DATABASE_URL or IRIS_DATA_DIR)"
    if isinstance(error, OSError) and error.filename is not None:
        return file_problem(error)
    return f"{type(error).__name__}: {error} (IRIS_LOG_LEVEL=DEBUG logs where it happened)"


def file_problem(error: OSError) -> str:
    """What a failed file write means for a person: a full disk and a read-only folder, said plainly."""
    where = error.filename if error.filename is not None else "a file"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the disk that holds {where} (free some space and try again)"
    if error.errno == errno.EROFS:
        return f"{where} is on a read-only file system (choose another folder or remount it writable)"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}"
    return f"{where}: {error.strerror or error}"
