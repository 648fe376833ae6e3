"""What the ``iris`` command says when a command fails: one line, never a traceback."""

from __future__ import annotations

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
        return f"the database cannot be used: {reason} (check DATABASE_URL or IRIS_DATA_DIR)"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return f"{type(error).__name__}: {error} (IRIS_LOG_LEVEL=DEBUG logs where it happened)"
