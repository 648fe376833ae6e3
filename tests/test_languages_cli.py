"""Languages through the ``iris`` command (issue #28): ``iris ask --json`` gives the message's and the
reply's language as stored, ``iris stats`` breaks messages down by language and counts the replies
the model wrote in another language than the one asked (the bundled 135M model writes English).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.languages import NOTES, Note, word_accuracy
from tests.conftest import FIXTURES
from tests.test_cli import iris
from tests.test_speech_languages import HEARD_WELL


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
        "IRIS_GENERATION_MAX_TOKENS": "24",
    }


def test_ask_json_gives_the_languages_and_stats_break_them_down(env: dict[str, str]) -> None:
    asked = iris(env, "ask", "¿Cuál es la capital de Francia y por qué es famosa?", "--json")
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["language"] == "es" and answer["language_probability"] > 0.5
    assert isinstance(answer["reply_language"], str) and answer["reply_language"]
    english = json.loads(iris(env, "ask", "What is the capital of France?", "--json").stdout)
    assert english["language"] == "en"

    stats = json.loads(iris(env, "stats", "--json").stdout)
    assert stats["by_language"] == {"es": 1, "en": 1}
    off = (answer["reply_language"] != "es") + (english["reply_language"] != "en")
    assert stats["replies_off_language"] == off
    table = iris(env, "stats").stdout
    assert "Messages by language: en 1, es 1" in table
    assert f"Replies not in the person's language: {off}" in table


def test_tiny_en_hears_english_only_and_says_so(env: dict[str, str]) -> None:
    """``IRIS_WHISPER_MODEL=tiny.en`` (English-only deployments): ``en``, for sure, on every note."""
    result = iris(
        {**env, "IRIS_WHISPER_MODEL": "tiny.en"},
        "ask",
        "--voice",
        str(FIXTURES / "capital_of_france.ogg"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["transcript"] == "What is the capital of France?"
    assert answer["language"] == "en" and answer["language_probability"] == 1.0


@pytest.mark.parametrize("note", HEARD_WELL, ids=lambda note: note.name)
def test_the_default_whisper_hears_a_voice_note_in_its_language(env: dict[str, str], note: Note) -> None:
    """No IRIS_WHISPER_MODEL: base (multilingual, bundled; assembled into the data dir on first use)."""
    result = iris(env, "ask", "--voice", str(NOTES / f"{note.name}.ogg"), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["language"] == note.language and 0 < answer["language_probability"] <= 1
    assert word_accuracy(note.text, answer["transcript"]) >= 0.8, answer["transcript"]
