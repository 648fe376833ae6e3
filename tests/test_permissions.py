"""What other accounts on the machine can read: nothing of Iris's data folder or database."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.database import make_engine, sqlite_url
from tests.conftest import _postgres_database

IRIS = str(Path(sys.executable).with_name("iris"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ask(tmp_path: Path, **env: str) -> None:
    """``iris ask`` under the usual umask, with which files are made world-readable."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE_URL"))
    }
    asked = subprocess.run(
        [IRIS, "ask", "What is the capital of France?"],
        env={**clean, "IRIS_GENERATION_MAX_TOKENS": "8", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        umask=0o022,
    )
    assert asked.returncode == 0, asked.stderr


def test_iris_ask_keeps_a_fresh_data_folder_and_its_database_private(tmp_path: Path, served_gguf: Path) -> None:
    data = tmp_path / "deploy" / "data"
    _ask(tmp_path, IRIS_DATA_DIR=str(data), IRIS_LLM_MODEL=str(served_gguf))

    assert _mode(data) == 0o700
    databases = sorted(data.glob("iris.db*"))
    assert databases and {path.name: _mode(path) for path in databases} == {
        path.name: 0o600 for path in databases
    }


def test_the_sqlite_journal_files_are_as_private_as_the_database(tmp_path: Path) -> None:
    previous = os.umask(0)  # the loosest umask: every bit comes from Iris
    try:
        url = sqlite_url(tmp_path / "data")
        engine = make_engine(url)
        with engine.begin() as connection:  # a write, so that the -wal and -shm files exist
            connection.execute(text("CREATE TABLE notes (words TEXT)"))
            connection.execute(text("INSERT INTO notes VALUES ('private')"))
        files = {path.name: _mode(path) for path in (tmp_path / "data").iterdir()}
        engine.dispose()
    finally:
        os.umask(previous)
    assert files == {"iris.db": 0o600, "iris.db-wal": 0o600, "iris.db-shm": 0o600}
    assert _mode(tmp_path / "data") == 0o700


@pytest.mark.postgres
def test_the_data_folder_is_private_with_the_database_elsewhere(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # PostgreSQL holds the conversations; the folder still gets the bundled model converted once.
    for url in _postgres_database():
        _ask(tmp_path, IRIS_DATA_DIR=str(data), DATABASE_URL=url)
    assert any(data.iterdir()) and _mode(data) == 0o700
