"""The ``iris`` command as a person runs it: a real process, real models, a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from core.domain import Role
from storage.database import make_engine
from storage.repository import SqlStore
from tests.conftest import FIXTURES

IRIS = str(Path(sys.executable).with_name("iris"))
ENV_EXAMPLE = Path(__file__).parents[1] / ".env.example"


@pytest.fixture
def env(tmp_path: Path, served_gguf: Path) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE_URL"))
    }
    return {
        **clean,
        "IRIS_DATA_DIR": str(tmp_path / "data"),
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_GENERATION_MAX_TOKENS": "48",
        "IRIS_WHISPER_MODEL": "tiny.en",  # English notes, heard as the tests were measured (README: Languages)
    }


def iris(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IRIS, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=env["IRIS_DATA_DIR"].rsplit("/", 1)[0],
    )


def stored(env: dict[str, str]) -> SqlStore:
    return SqlStore(make_engine(f"sqlite:///{env['IRIS_DATA_DIR']}/iris.db"))


def test_ask_a_voice_note_as_json(env: dict[str, str]) -> None:
    result = iris(env, "ask", "--voice", str(FIXTURES / "capital_of_france.ogg"), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["transcript"] == "What is the capital of France?"
    assert answer["reply"].strip()
    assert answer["model"] == "smollm2-135m-instruct-f16"
    assert set(answer["timings"]) == {"transcribe_ms", "generate_ms", "total_ms", "tokens"}
    assert answer["timings"]["tokens"] > 0

    store = stored(env)
    reply = store.get_turn(answer["turn_id"])
    assert reply is not None and reply.role is Role.ASSISTANT and reply.text == answer["reply"]
    assert reply.model_version == answer["model"]
    assert reply.timings.transcribe_ms == pytest.approx(answer["timings"]["transcribe_ms"])
    store.engine.dispose()


def test_ask_text_then_rate_and_correct_then_stats(env: dict[str, str]) -> None:
    asked = iris(env, "ask", "Who maintains the Iris bot?", "--json")
    assert asked.returncode == 0, asked.stderr
    turn_id = json.loads(asked.stdout)["turn_id"]
    assert json.loads(asked.stdout)["transcript"] is None

    rated = iris(env, "rate", str(turn_id), "up")
    assert rated.returncode == 0 and "created" in rated.stdout
    changed = iris(env, "rate", str(turn_id), "down", "--fix", "Ada maintains it.")
    assert changed.returncode == 0 and "changed" in changed.stdout and "pending review" in changed.stdout
    wrong = iris(env, "rate", str(turn_id - 1), "up")
    assert wrong.returncode == 1 and "not one of my replies" in wrong.stderr

    stats = json.loads(iris(env, "stats", "--json").stdout)
    assert stats["user_turns"] == 1 and stats["corrections_pending"] == 1
    assert stats["by_model"] == [{"model": "smollm2-135m-instruct-f16", "replies": 1, "up": 0, "down": 1}]
    table = iris(env, "stats").stdout
    assert "• smollm2-135m-instruct-f16: 1 replies, 0 👍, 1 👎 (0% 👍)" in table


def test_ask_refuses_bad_audio_with_exit_status_1(env: dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(b"not audio" * 50)
    result = iris(env, "ask", "--voice", str(junk))
    assert result.returncode == 1
    assert "could not read that audio" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_the_console_chat(env: dict[str, str]) -> None:
    script = "\n".join(
        [
            f"/voice {FIXTURES / 'capital_of_france.ogg'}",
            "/good",
            "/fix Paris is the capital of France.",
            "/bad",
            "/voice /no/such/file.ogg",
            "/reset",
            "Hello!",
            "/forget",
            "/quit",
        ]
    )
    result = iris(env, "chat", stdin=script + "\n")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert '🎤 "What is the capital of France?"' in out
    assert "[turn 2 · smollm2-135m-instruct-f16" in out
    assert "👍 created for turn 2" in out and "👎 changed for turn 2" in out
    assert "correction 1 saved" in out
    assert "cannot read /no/such/file.ogg" in out
    assert "(new conversation)" in out
    assert "(Done: I deleted 4 messages, 1 rating and 1 suggested answer." in out


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_the_console_chat_reads_bytes_that_are_not_text_and_answers(env: dict[str, str], locale: str) -> None:
    """A byte that is not UTF-8 typed or piped in: under a UTF-8 locale it used to end the chat with
    a traceback; under the C locale it became a lone surrogate, and the message could not be stored.
    A NUL is kept out too (PostgreSQL refuses it)."""
    result = subprocess.run(
        [IRIS, "chat"],
        env={**env, "LC_ALL": locale, "LANG": locale},
        input=b"What is the capital\0 of \xffFrance?\n/quit\n",
        capture_output=True,
        timeout=300,
        cwd=env["IRIS_DATA_DIR"].rsplit("/", 1)[0],
    )
    out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    assert result.returncode == 0, err
    assert "Traceback" not in out + err and "could not save" not in out
    assert "[turn 2 · smollm2-135m-instruct-f16" in out
    question = stored(env).get_turn(1)
    assert question is not None and question.text == "What is the capital\ufffd of \ufffdFrance?"


def test_run_without_tokens_opens_the_local_chat(env: dict[str, str]) -> None:
    result = iris(env, "run", stdin=f"/voice {FIXTURES / 'capital_of_france.ogg'}\n")
    assert result.returncode == 0
    assert "No TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN is set" in result.stderr
    assert "Iris local chat" in result.stdout
    assert '🎤 "What is the capital of France?"' in result.stdout and "[turn 2 · " in result.stdout


def test_db_upgrade_and_models(env: dict[str, str]) -> None:
    upgraded = iris(env, "db", "upgrade")
    assert upgraded.returncode == 0 and "revision 0" in upgraded.stdout
    listed = iris(env, "models", "list")
    assert listed.stdout.startswith("* smollm2-135m-instruct-f16")
    missing = iris(env, "models", "activate", "nope")
    assert missing.returncode == 1 and "no model version named 'nope'" in missing.stderr


def test_importing_iris_loads_no_model_library() -> None:
    """The bot starts in seconds and imports on machines without a GPU."""
    code = (
        "import sys, bots.cli, bots.app, bots.serve, core.service, storage.repository;"
        "print(sorted(m for m in ('torch', 'llama_cpp', 'faster_whisper', 'ctranslate2', 'transformers', 'trl')"
        " if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_env_example_as_copied_is_a_valid_configuration(tmp_path: Path) -> None:
    """People start from `cp .env.example .env`; every value there is the default, or empty for it."""
    from bots.settings import Settings

    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    assert Settings(_env_file=env_file) == Settings(_env_file=None)  # type: ignore[call-arg]


def test_env_example_documents_every_setting() -> None:
    import re

    from bots.settings import Settings

    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", ENV_EXAMPLE.read_text(), re.M))
    names: dict[str, set[str]] = {}  # each setting: the variables that set it
    for name, field in Settings.model_fields.items():
        if is_dataclass(field.annotation):  # a group: IRIS_<GROUP>_<FIELD>
            for part in fields(field.annotation):
                names[f"{name}.{part.name}"] = {f"IRIS_{name}_{part.name}".upper()}
        else:
            names[name] = {f"IRIS_{name.upper()}", *getattr(field.validation_alias, "choices", [])}
    assert [setting for setting, variables in names.items() if not variables & listed] == []
    known = set().union(*names.values())
    assert [name for name in listed if name not in known] == []  # no stale or misspelt names


def test_every_setting_is_read_from_its_variable(tmp_path: Path) -> None:
    """IRIS_<GROUP>_<FIELD> reaches the component's config; an old name is refused with its new one."""
    from bots.settings import RenamedSettings, Settings, check_renamed

    env_file = tmp_path / ".env"
    env_file.write_text(
        "IRIS_WHISPER_COMPUTE_TYPE=float32\nIRIS_LLM_PARALLEL=2\nIRIS_GENERATION_SEED=7\n"
        "IRIS_CHAT_RETENTION_DAYS=30\nIRIS_RATE_LIMIT_MESSAGES_PER_HOUR=5\nIRIS_TTS_REPLIES=always\n"
        "IRIS_RETRAIN_MAX_STEPS=3\nIRIS_GATE_MAX_ROWS=8\nIRIS_AB_MARGIN=0.05\nIRIS_SERVER_RETRIES=0\n"
        "IRIS_LLM_KV_CACHE=f16\nIRIS_WHISPER_FALLBACK=true\n"
    )
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.whisper.compute_type == "float32" and settings.llm.parallel == 2
    assert settings.generation.seed == 7 and settings.chat.retention_days == 30
    assert settings.rate_limit.messages_per_hour == 5 and settings.tts.replies == "always"
    assert settings.retrain.profile_overrides() == {"max_steps": 3} and settings.gate.max_rows == 8
    assert settings.ab.margin == 0.05 and settings.server.retries == 0
    assert settings.llm.kv_cache == "f16" and settings.whisper.fallback is True
    check_renamed(env_file)  # nothing old here

    env_file.write_text("IRIS_RETENTION_DAYS=30\nIRIS_SEED=7\n")
    with pytest.raises(RenamedSettings) as refused:
        check_renamed(env_file)
    assert "IRIS_RETENTION_DAYS is now IRIS_CHAT_RETENTION_DAYS" in str(refused.value)
    assert "IRIS_SEED is now IRIS_GENERATION_SEED" in str(refused.value)


NO_SUCH_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/iris_no_such_database"


@pytest.mark.parametrize(
    ("args", "extra_env", "says"),
    [
        (["ask", "--voice", "/no/such/note.ogg"], {}, "does not exist"),
        (["ask", "--voice", "/"], {}, "is a directory"),
        (["ask"], {}, "either TEXT or --voice"),
        (["rate", "seven", "up"], {}, "turn_id"),
        (["stats"], {"IRIS_GENERATION_MAX_TOKENS": "lots"}, "IRIS_GENERATION_MAX_TOKENS"),
        (["stats"], {"IRIS_LLM_KV_CACHE": "q4_0"}, "IRIS_LLM_KV_CACHE: Input should be 'f16' or 'q8_0'"),
        (["stats"], {"IRIS_WHISPER_FALLBACK": "sometimes"}, "IRIS_WHISPER_FALLBACK"),
        (["stats"], {"IRIS_REPLY_VOICE": "off"}, "IRIS_REPLY_VOICE is now IRIS_TTS_REPLIES"),
        (["stats"], {"DATABASE_URL": NO_SUCH_DATABASE}, "the database cannot be used"),
        (
            ["models", "list"],
            {"DATABASE_URL": "sqlite:////no/such/folder/iris.db"},
            "the database cannot be used",
        ),
        (["dataset", "build", "--finetome", "/no/such/finetome.jsonl", "--out", "out"], {}, "/no/such"),
        (["review", "--approve", "99"], {}, "99"),
    ],
)
def test_a_bad_path_argument_or_database_gets_one_clear_line(
    env: dict[str, str], args: list[str], extra_env: dict[str, str], says: str
) -> None:
    result = iris({**env, **extra_env}, *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert says in result.stderr.lower() if says.islower() else says in result.stderr
    # Our own errors are one line; usage errors keep click's short usage block.
    if result.stderr.startswith("iris: "):
        assert result.stderr.strip().count("\n") == 0, result.stderr


def test_models_add_then_an_ab_test_started_watched_and_promoted(
    env: dict[str, str], models_dir: Path, tmp_path: Path
) -> None:
    from core.gguf import bundled_model

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    refused = iris(env, "models", "add", "broken", "--gguf", str(broken))
    assert refused.returncode == 1 and refused.stderr.startswith("not added:"), refused.stderr

    q4 = bundled_model(models_dir, "q4_1").gguf_path
    added = iris(env, "models", "add", "unsloth-run-7", "--gguf", q4, "--base-model", "HuggingFaceTB/SmolLM2")
    assert added.returncode == 0, added.stderr
    assert "added unsloth-run-7 (inactive)" in added.stdout
    listed = iris(env, "models", "list").stdout
    assert "* smollm2-135m-instruct-f16" in listed and "  unsloth-run-7" in listed
    assert "broken" not in listed
    assert iris(env, "models", "add", "unsloth-run-7", "--gguf", q4).returncode == 1  # names are unique

    assert iris(env, "models", "ab", "stop", "--promote").returncode == 1  # none is running
    started = iris(env, "models", "ab", "start", "unsloth-run-7", "--share", "0.3", "--min-ratings", "50")
    assert started.returncode == 0, started.stderr
    assert "30% of conversations" in started.stdout
    assert iris(env, "models", "ab", "start", "unsloth-run-7").returncode == 1  # one at a time

    status = json.loads(iris(env, "models", "ab", "status", "--json").stdout)
    assert status["experiment"]["candidate"] == "unsloth-run-7"
    assert status["experiment"]["min_ratings"] == 50 and status["decision"] == "wait"
    assert "Rule now: wait" in iris(env, "models", "ab", "status").stdout

    stopped = iris(env, "models", "ab", "stop", "--promote")
    assert stopped.returncode == 0, stopped.stderr
    assert "active: unsloth-run-7" in stopped.stdout
    trail = iris(env, "audit").stdout
    assert "model.add" in trail and "ab.start" in trail and "ab.stop" in trail
