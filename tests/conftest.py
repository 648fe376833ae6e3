"""Shared fixtures: real bundled models, real voice notes, real SQLite and PostgreSQL.

The models load once per test session; every test gets its own database.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

import pytest

from bots.app import App, build_app
from bots.settings import Settings
from core.generation import LlamaGenerator, LlmConfig
from core.gguf import bundled_model
from core.model_check import CHECKED_RECORD, CheckedModels
from core.transcription import WhisperConfig, WhisperTranscriber
from core.whisper_models import BASE, TINY_EN
from storage.database import make_engine
from storage.migrate import upgrade
from storage.repository import SqlStore

# Tests stop `iris run` processes with SIGINT, as Ctrl+C does. A suite started as a background
# job of a non-interactive shell (`make test &`) runs with SIGINT ignored, which the processes it
# starts would inherit; handled here, they start with its default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FIXTURES = Path(__file__).parent / "fixtures"
POSTGRES_ADMIN_URL = os.environ.get(
    "IRIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs the command line in-process sets up logging to the stderr pytest captured
    for it; left in place, later tests' log lines go to that closed stream ("Logging error")."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if type(handler) is logging.StreamHandler and handler not in before:  # pytest's own are subclasses
            root.removeHandler(handler)
    root.setLevel(level)


def voice(name: str) -> bytes:
    """A committed voice-note fixture (see tests/fixtures/make_voice_notes.sh)."""
    return (FIXTURES / name).read_bytes()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def served_gguf(models_dir: Path) -> Path:
    """The default served model: the bundled SmolLM2 re-exported to F16 (once per session).

    Checked in a child process once here, as a bot's first start checks it; ``make_settings``
    gives every test's data dir this record, as a deployment that has started before has it
    (tests/test_first_load.py starts without one).
    """
    path = Path(bundled_model(models_dir, "f16").gguf_path)
    CheckedModels(models_dir / CHECKED_RECORD).ensure(path)
    return path


@pytest.fixture(scope="session")
def transcriber() -> WhisperTranscriber:
    """The bundled ``tiny.en``: English tests hear with it (faster than the default ``base``)."""
    return WhisperTranscriber(WhisperConfig(model=TINY_EN))


@pytest.fixture(scope="session")
def multilingual_transcriber() -> WhisperTranscriber:
    """The bundled whisper ``base`` (multilingual), assembled once into the user's cache."""
    return WhisperTranscriber(WhisperConfig(model=BASE))


@pytest.fixture(scope="session")
def generator(served_gguf: Path) -> LlamaGenerator:
    """One llama.cpp instance for the session, serving the F16 file (no registry)."""
    from core.domain import ModelVersion

    model = ModelVersion(id=0, name="smollm2-135m-instruct-f16", gguf_path=str(served_gguf))
    config = LlmConfig(context_tokens=2048)
    return LlamaGenerator(None, model, config, checked_record=served_gguf.parent / CHECKED_RECORD)


def make_settings(tmp_path: Path, served_gguf: Path, **overrides: Any) -> Settings:
    """Settings for a test: its own data dir and database, the shared F16 model file.

    Overrides are named as their variables without ``IRIS_``, lowercased: ``llm_url=...`` is
    ``IRIS_LLM_URL``, the ``url`` of the ``llm`` group.
    """
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "llm": {"model": str(served_gguf)},
        "generation": {"temperature": 0.0, "seed": 1, "max_tokens": 48},
        "tts": {"replies": "off"},  # text only, unless a test of spoken replies asks for them
        "whisper": {"model": TINY_EN},  # the session's `transcriber`; multilingual tests ask for base
    }
    groups = sorted(
        (name for name in Settings.model_fields if is_dataclass(Settings.model_fields[name].annotation)),
        key=len,
        reverse=True,
    )
    for name, value in overrides.items():
        group = next((group for group in groups if name.startswith(group + "_")), None)
        if group is None:
            if name not in Settings.model_fields:
                raise TypeError(f"no setting {name!r}: the variable would be IRIS_{name.upper()}")
            values[name] = value
        else:
            values.setdefault(group, {})[name.removeprefix(group + "_")] = value
    # The session's check of the served model (``served_gguf``), so that a test's first reply
    # starts no child process (tests/test_first_load.py tests that check with records of its own).
    checked = served_gguf.parent / CHECKED_RECORD
    data_dir = Path(values["data_dir"])
    if checked.is_file() and not (data_dir / CHECKED_RECORD).exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(checked, data_dir / CHECKED_RECORD)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, served_gguf: Path) -> Settings:
    return make_settings(tmp_path, served_gguf)


@pytest.fixture
def app(settings: Settings, transcriber: WhisperTranscriber) -> Iterator[App]:
    """The whole application as the composition root builds it, sharing the loaded whisper."""
    application = build_app(settings)
    application.service.listener.transcriber = transcriber  # whisper loads once per session
    application.transcriber = transcriber
    yield application
    application.close()


# --- databases ---------------------------------------------------------------


def _postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"iris_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as error:
        admin.dispose()
        reason = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {error.orig}"
        if "IRIS_TEST_POSTGRES_URL" in os.environ:  # asked for by name: a missing server is a failure
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'iris.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield SqlStore(engine)
    engine.dispose()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say in one line how many PostgreSQL tests did not run, so a green run cannot hide it."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if "postgres" in report.keywords]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} PostgreSQL tests skipped: nothing answered at {POSTGRES_ADMIN_URL} "
            "(start PostgreSQL, or set IRIS_TEST_POSTGRES_URL to make its absence fail the run)",
            yellow=True,
        )
