"""What the ``iris`` command says when a command fails: one line, never a traceback."""

from __future__ import annotations

from pydantic import ValidationError


def explain(error: Exception) -> str:
    """One line a person can act on, for an error no command caught itself."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, ValidationError):
        # Never the input value: a setting that fails validation may be a token.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'settings'}: {problem['msg']}"
            for problem in error.errors()
        )
        return f"a setting is not valid ({problems}); see .env.example"
    if isinstance(error, DBAPIError):
        reason = str(error.orig or error).strip().splitlines()[0]
        return f"the database cannot be used: {reason} (check DATABASE_URL or IRIS_DATA_DIR)"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return f"{type(error).__name__}: {error} (IRIS_LOG_LEVEL=DEBUG logs where it happened)"
