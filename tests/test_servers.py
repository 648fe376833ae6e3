"""Replies and transcripts from real OpenAI-compatible servers on 127.0.0.1, started by the tests.

llama-cpp-python's own server (``python -m llama_cpp.server``) serves the bundled model under
two version names; faster-whisper-server serves the bundled whisper. The servers are killed
and restarted under the bot to show what a person sees when one goes away and comes back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bots.app import App, build_app
from bots.cli_models import llama_server_config
from core.domain import (
    ChatRef,
    IncomingMessage,
    ModelVersion,
    Notice,
    Person,
    ReplyDelta,
    ReplyDone,
    Transcribed,
)
from core.transcription import bundled_whisper_path
from tests.conftest import make_settings, voice

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server] (the dev extra)")

ALICE = Person("test", "alice", "Alice")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A server process on 127.0.0.1 that a test can kill and start again on the same port."""

    command: list[str]
    port: int
    ready_path: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.root + self.ready_path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)


@pytest.fixture
def versions(tmp_path: Path, served_gguf: Path) -> list[ModelVersion]:
    """Two versions the server serves: the F16 model and a copy of it under another name."""
    copy = tmp_path / "other.gguf"
    try:
        os.link(served_gguf, copy)
    except OSError:  # another file system
        shutil.copy(served_gguf, copy)
    return [
        ModelVersion(0, "smollm2-135m-instruct-f16", str(served_gguf)),
        ModelVersion(0, "other-version", str(copy)),
    ]


@pytest.fixture
def llama_server(tmp_path: Path, versions: list[ModelVersion]) -> Iterator[Server]:
    port = free_port()
    config = tmp_path / "llama-server.json"
    config.write_text(json.dumps(llama_server_config(versions, "127.0.0.1", port, 2048, None)))
    server = Server(
        [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
        port,
        "/v1/models",
        tmp_path / "llama-server.log",
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture
def server_app(tmp_path: Path, served_gguf: Path, llama_server: Server) -> Iterator[App]:
    settings = make_settings(
        tmp_path,
        served_gguf,
        llm_url=llama_server.root + "/v1",
        server_retries=1,
        server_read_timeout_seconds=20,
    )
    application = build_app(settings)
    yield application
    application.close()


async def events(app: App, text: str, person: Person = ALICE) -> list[object]:
    message = IncomingMessage(ChatRef("test", person.user_id), person, text=text)
    return [event async for event in app.service.replies.handle(message)]


def stored(app: App, turn_id: int) -> tuple[str | None, str | None, str | None]:
    turn = app.store.get_turn(turn_id)
    assert turn is not None
    return turn.text, turn.model_version, turn.error


async def test_replies_stream_from_the_server_and_follow_the_registry(
    server_app: App, versions: list[ModelVersion]
) -> None:
    got = await events(server_app, "What is the capital of France?")
    done = got[-1]
    assert isinstance(done, ReplyDone) and done.text.strip()
    assert sum(isinstance(event, ReplyDelta) for event in got) >= 1  # streamed, not one block
    assert stored(server_app, done.turn_id) == (done.text, "smollm2-135m-instruct-f16", None)

    # A promotion reaches the server path the same way: the next request names the new version.
    other = versions[1]
    server_app.store.register_model(other.name, other.gguf_path, activate=True)
    again = (await events(server_app, "And of Italy?"))[-1]
    assert isinstance(again, ReplyDone) and again.model == "other-version"
    assert stored(server_app, again.turn_id)[1] == "other-version"

    # A version the server does not serve is refused with a reason, not answered by another model.
    server_app.store.register_model("not-on-the-server", other.gguf_path, activate=True)
    refused = (await events(server_app, "And of Spain?"))[-1]
    assert isinstance(refused, Notice) and "does not serve 'not-on-the-server'" in refused.text
    assert refused.turn_id is not None and stored(server_app, refused.turn_id)[2] == refused.text
    server_app.store.rollback_model()
    back = (await events(server_app, "And of Spain?"))[-1]
    assert isinstance(back, ReplyDone) and back.model == "other-version"


async def test_a_server_killed_mid_reply_gets_a_notice_and_the_bot_recovers_when_it_is_back(
    server_app: App, llama_server: Server
) -> None:
    from dataclasses import replace

    writer = server_app.service.writer
    writer.config = replace(writer.config, generation=replace(writer.config.generation, max_tokens=400))
    message = IncomingMessage(
        ChatRef("test", "alice"), ALICE, text="Write a long story about a dragon who learns to sing."
    )
    seen: list[object] = []
    async for event in server_app.service.replies.handle(message):
        seen.append(event)
        if isinstance(event, ReplyDelta) and len(seen) == 1:
            llama_server.kill()  # as a crash or a redeploy would, while the reply streams
    notice = seen[-1]
    assert isinstance(notice, Notice), seen
    assert "I cannot answer right now" in notice.text and "model server" in notice.text
    assert "Traceback" not in notice.text and "127.0.0.1" not in notice.text
    assert notice.turn_id is not None
    question = server_app.store.get_turn(notice.turn_id)
    assert question is not None and question.text and question.error == notice.text  # the turn stays, with why

    # While it is down, another chat gets the same clear answer quickly (bounded retries).
    began = time.monotonic()
    down = (await events(server_app, "Hello?", Person("test", "bob")))[-1]
    assert isinstance(down, Notice) and "not reachable" in down.text
    assert time.monotonic() - began < 30

    llama_server.start()  # back on the same port: no restart of the bot
    back = (await events(server_app, "What is the capital of France?"))[-1]
    assert isinstance(back, ReplyDone) and back.text.strip()


@pytest.fixture
def whisper_server(tmp_path: Path) -> Iterator[Server]:
    pytest.importorskip("faster_whisper_server", reason="needs faster-whisper-server (the dev extra)")
    port = free_port()
    command = [sys.executable, "-m", "faster_whisper_server", str(bundled_whisper_path())]
    server = Server(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        port,
        "/health",
        tmp_path / "whisper-server.log",
    )
    server.start()
    yield server
    server.kill()


async def test_voice_notes_are_transcribed_by_a_server_with_the_same_limits(
    tmp_path: Path, served_gguf: Path, whisper_server: Server
) -> None:
    settings = make_settings(
        tmp_path,
        served_gguf,
        whisper_url=whisper_server.root + "/v1",
        chat_max_audio_seconds=60,
        server_retries=0,
    )
    app = build_app(settings)
    try:
        from core.domain import Audio

        def note(data: bytes) -> IncomingMessage:
            return IncomingMessage(ChatRef("test", "alice"), ALICE, audio=Audio(data, "audio/ogg", "note.ogg"))

        got = [event async for event in app.service.replies.handle(note(voice("capital_of_france.ogg")))]
        heard = next(event for event in got if isinstance(event, Transcribed))
        assert heard.text.rstrip(".?").lower() == "what is the capital of france"
        assert isinstance(got[-1], ReplyDone)

        bad = [event async for event in app.service.replies.handle(note(b"OggS" + bytes(500)))][-1]
        assert isinstance(bad, Notice) and bad.text.startswith("I could not read that audio")

        whisper_server.kill()
        down = [event async for event in app.service.replies.handle(note(voice("capital_of_france.ogg")))][-1]
        assert isinstance(down, Notice) and "I cannot listen right now" in down.text
        assert down.turn_id is not None and stored(app, down.turn_id)[2] == down.text
    finally:
        app.close()
