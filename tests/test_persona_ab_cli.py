"""``iris models ab start --personas``: an A/B test of two personas started, read, refused and stopped
through the real command, as an admin runs it (issue #29)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.domain import AuditAction
from storage.database import make_engine
from storage.repository import SqlStore

PIRATE = "You are a cheerful pirate. Answer in one sentence."
TEACHER = "You are a patient teacher. Explain step by step."

IRIS = str(Path(sys.executable).with_name("iris"))


@pytest.fixture
def env(tmp_path: Path, served_gguf: Path) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE_URL"))
    }
    return {**clean, "IRIS_DATA_DIR": str(tmp_path / "data"), "IRIS_LLM_MODEL": str(served_gguf)}


def iris(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IRIS, *args], env=env, capture_output=True, text=True, timeout=300)


def refused_in_one_line(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 1, result.stdout
    assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_admins_run_a_persona_ab_test_with_iris(env: dict[str, str]) -> None:
    for args in (["teacher", "--prompt", TEACHER, "--default"], ["pirate", "--prompt", PIRATE]):
        assert iris(env, "persona", "add", *args).returncode == 0
    refused_in_one_line(iris(env, "models", "ab", "start"), "name a CANDIDATE version, or --personas")
    refused_in_one_line(iris(env, "models", "ab", "start", "x", "--personas", "a", "b"), "name a CANDIDATE")
    refused_in_one_line(
        iris(env, "models", "ab", "start", "--personas", "teacher", "ghost"), "no persona named 'ghost'"
    )
    refused_in_one_line(iris(env, "models", "ab", "start", "--personas", "pirate", "pirate"), "two different")
    refused_in_one_line(
        iris(env, "models", "ab", "start", "--personas", "teacher", "pirate", "--share", "2"), "between 0 and 1"
    )

    started = iris(env, "models", "ab", "start", "--personas", "teacher", "pirate", "--min-ratings", "30")
    assert started.returncode == 0, started.stderr
    assert "persona pirate for 50% of conversations, persona teacher for the rest" in started.stdout
    refused_in_one_line(
        iris(env, "models", "ab", "start", "--personas", "pirate", "teacher"),
        "(personas pirate) is running; stop it first",
    )

    status = json.loads(iris(env, "models", "ab", "status", "--json").stdout)
    assert status["experiment"]["kind"] == "persona" and status["decision"] == "wait"
    assert (status["arms"]["control"]["name"], status["arms"]["candidate"]["name"]) == ("teacher", "pirate")
    text = iris(env, "models", "ab", "status").stdout
    assert "persona pirate to 50% of conversations against persona teacher (running)" in text

    stopped = iris(env, "models", "ab", "stop", "--promote")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped: promote; default persona: pirate" in stopped.stdout
    listed = json.loads(iris(env, "persona", "list", "--json").stdout)
    assert [(p["name"], p["is_default"]) for p in listed] == [("pirate", True), ("teacher", False)]
    refused_in_one_line(iris(env, "models", "ab", "stop", "--promote"), "no A/B test is running")

    store = SqlStore(make_engine(f"sqlite:///{env['IRIS_DATA_DIR']}/iris.db"))
    try:
        trail = [
            (e.action, e.target)
            for e in store.audit_entries()
            if e.action.value.startswith(("ab.", "persona.e"))
        ]
    finally:
        store.engine.dispose()
    assert trail == [
        (AuditAction.AB_START, "pirate"),
        (AuditAction.AB_STOP, "pirate"),
        (AuditAction.PERSONA_EDIT, "pirate"),
    ]
