"""A run without PostgreSQL says so: skipped tests are counted, and a server asked for by name must answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONE_POSTGRES_TEST = "tests/test_storage.py::test_a_turn_is_stored_with_its_timings_and_model[postgres]"
NOBODY = "postgresql+psycopg://postgres@127.0.0.1:9/postgres"  # the discard port: nothing answers


def run_pytest(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    arguments = ["-q", "-p", "no:cacheprovider", ONE_POSTGRES_TEST]
    code = f"import sys, pytest\n{prelude}\nsys.exit(pytest.main({arguments!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_an_unreachable_server_named_in_the_environment_fails_the_run() -> None:
    result = run_pytest({**os.environ, "IRIS_TEST_POSTGRES_URL": NOBODY})
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "PostgreSQL is not reachable" in result.stdout


def test_without_a_server_the_summary_counts_the_skipped_postgres_tests() -> None:
    env = {k: v for k, v in os.environ.items() if k != "IRIS_TEST_POSTGRES_URL"}
    # The default address, pointed elsewhere: as on a machine where nothing listens on 5432.
    prelude = f"import tests.conftest as c; c.POSTGRES_ADMIN_URL = {NOBODY!r}"
    result = run_pytest(env, prelude)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "1 PostgreSQL tests skipped: nothing answered at" in result.stdout
