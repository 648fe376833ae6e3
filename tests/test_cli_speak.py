"""Spoken replies from the command line: ``iris ask --speak OUT.ogg`` and ``/voice`` in ``iris chat``."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.test_cli import env, iris  # noqa: F401  (env is a fixture)

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def opus_seconds(path: Path) -> float:
    import av

    with av.open(io.BytesIO(path.read_bytes())) as container:
        (stream,) = container.streams.audio
        assert stream.codec_context.name == "opus" and stream.rate == 48_000 and stream.channels == 1
        assert container.duration is not None
        return container.duration / 1_000_000


def test_ask_speak_writes_the_spoken_reply(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "reply.ogg"
    result = iris(env, "ask", "What is the capital of France?", "--speak", str(out), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["reply"].strip()
    assert answer["spoken"]["path"] == str(out) and answer["spoken"]["speak_ms"] > 0
    assert answer["spoken"]["seconds"] == pytest.approx(opus_seconds(out), abs=0.1)

    plain = iris(env, "ask", "--voice", str(FIXTURES / "capital_of_france.ogg"), "--speak", str(out))
    assert plain.returncode == 0 and f"(spoken: {out}, " in plain.stdout


def test_voice_on_in_the_console_chat(env: dict[str, str]) -> None:  # noqa: F811
    result = iris(env, "chat", stdin="/voice on\nHello there!\n/voice off\nHello again!\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert "voice note" in result.stdout and "text only" in result.stdout
    (spoken,) = [line for line in result.stdout.splitlines() if "🔊" in line]
    path = Path(env["IRIS_DATA_DIR"]).parent / spoken.split("spoken: ")[1].rstrip(")")
    assert opus_seconds(path) > 0.3
