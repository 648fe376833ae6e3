"""Audio is measured by decoding it, never by what its header claims.

The hostile files come from ``tests.hostile_audio``: WebM, MP4 and OGG whose headers say 10 s
but hold ten minutes, a WAV whose sizes lie, 30 minutes of 6 kbit/s Opus (the shape of a 20 MB
file that holds seven hours). Decoding stops at the limit plus a small margin, in one buffer of
that size; the person is told the limit in one sentence, the voice minutes are charged what was
really decoded, and the next note is answered.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bots.app import App
from core.domain import Audio, ChatRef, IncomingMessage, Notice, NoticeKind, Person, ReplyDone, ServiceEvent
from core.limits import RateLimits
from core.ports import AudioTooLong
from core.remote import ServerConfig, ServerTranscriber
from core.service import ChatService
from core.transcription import LENGTH_MARGIN_S, SAMPLE_RATE, WhisperConfig, decode
from tests import hostile_audio
from tests.conftest import voice

LIMIT_S = 60.0
HOLDS_S = 600.0  # ten minutes behind a header that says ten seconds
FLOAT32 = 4
BUFFER_BYTES = int((LIMIT_S + LENGTH_MARGIN_S) * SAMPLE_RATE) * FLOAT32
ADA = Person("test", "ada", "Ada")
BEN = Person("test", "ben", "Ben")

LYING: dict[str, Callable[[float], bytes]] = {
    "webm": lambda seconds: hostile_audio.lying_webm(seconds, claims=10),
    "mp4": lambda seconds: hostile_audio.lying_mp4(seconds, claims=10),
    "ogg": lambda seconds: hostile_audio.lying_ogg(seconds, claims=10),
}


def claimed_seconds(audio: bytes) -> float:
    import av

    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        assert container.duration is not None
        return float(container.duration / av.time_base)


# --- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("container", LYING)
def test_a_lying_header_does_not_buy_more_decoding(container: str) -> None:
    audio = LYING[container](HOLDS_S)
    assert claimed_seconds(audio) == pytest.approx(10, abs=0.1)  # the lie is in place
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLong) as refused:
            decode(audio, LIMIT_S)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Stopped at the first piece past the limit and the margin, not after ten minutes.
    assert LIMIT_S < refused.value.seconds <= LIMIT_S + LENGTH_MARGIN_S + 0.1
    assert "60 s limit" in str(refused.value)
    # One buffer of the limit's size, not ten minutes of samples (38 MB) and their copies.
    assert peak < BUFFER_BYTES + 2_000_000


@pytest.mark.parametrize("container", LYING)
def test_a_note_shorter_than_the_limit_is_measured_by_its_real_length(container: str) -> None:
    decoded = decode(LYING[container](40), LIMIT_S)
    assert decoded.seconds == pytest.approx(40, abs=0.5)  # not the 10 s claimed (OGG: last page cut)
    assert len(decoded.samples) == int(decoded.seconds * SAMPLE_RATE)


def test_a_wav_is_decoded_no_further_than_its_data_size() -> None:
    decoded = decode(hostile_audio.lying_wav(300, claims=10), LIMIT_S)
    assert decoded.seconds == pytest.approx(10, abs=0.01)


def test_thirty_minutes_at_6_kbit_s_is_refused_by_its_header_or_by_decoding() -> None:
    honest = hostile_audio.long_ogg(1800)
    assert len(honest) < 1_500_000  # 30 minutes in 1.4 MB: 20 MB holds seven hours
    lying = hostile_audio.lying_ogg(1800, claims=10)
    for audio in (honest, lying):
        tracemalloc.start()
        try:
            with pytest.raises(AudioTooLong) as refused:
                decode(audio, LIMIT_S)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert refused.value.limit == LIMIT_S
        assert peak < BUFFER_BYTES + 2_000_000


def test_a_silence_bomb_stops_at_the_limit() -> None:
    """Half an hour of digital silence in a 0.3 MB FLAC whose header does not say how long it is."""
    with pytest.raises(AudioTooLong) as refused:
        decode(hostile_audio.silence_bomb(1800), LIMIT_S)
    assert refused.value.seconds <= LIMIT_S + LENGTH_MARGIN_S + 1


# --- through the service ---------------------------------------------------------------------


def service_for(app: App, **limits: float) -> ChatService:
    config = app.service.config
    config = replace(config, chat=replace(config.chat, max_audio_seconds=LIMIT_S), limits=RateLimits(**limits))  # type: ignore[arg-type]
    return ChatService(app.store, app.transcriber, app.generator, config)


def note(audio: bytes, person: Person = ADA) -> IncomingMessage:
    return IncomingMessage(
        ChatRef("test", person.user_id), person, audio=Audio(audio, "audio/webm", "note.webm")
    )


async def last_event(service: ChatService, message: IncomingMessage) -> ServiceEvent:
    events = [event async for event in service.replies.handle(message)]
    return events[-1]


def stored_voice_turns(app: App) -> list[tuple[float | None, str | None]]:
    from sqlalchemy import select

    from storage.tables import TurnRow

    with app.store.engine.connect() as connection:
        rows = connection.execute(
            select(TurnRow.audio_seconds, TurnRow.error).where(TurnRow.from_voice).order_by(TurnRow.id)
        ).all()
    return [(row[0], row[1]) for row in rows]


@pytest.mark.parametrize("container", LYING)
async def test_a_lying_note_is_refused_naming_the_limit_and_the_next_is_answered(
    app: App, container: str
) -> None:
    service = service_for(app)
    refused = await last_event(service, note(LYING[container](HOLDS_S)))
    assert isinstance(refused, Notice) and refused.kind is NoticeKind.TOO_LONG
    assert refused.text == "That voice note is too long: I can take up to 60 s."
    ((seconds, error),) = stored_voice_turns(app)
    assert error == refused.text and seconds is not None and seconds <= LIMIT_S + LENGTH_MARGIN_S + 0.1

    answered = await last_event(service, note(voice("capital_of_france.ogg"), BEN))
    assert isinstance(answered, ReplyDone) and answered.text.strip()


async def test_voice_minutes_are_charged_the_length_really_decoded(app: App) -> None:
    """Two notes that each claim 10 s but hold 40 s: 80 s is over a minute's allowance, 20 s is not."""
    service = service_for(app, voice_minutes_per_hour=1.0)
    first = await last_event(service, note(hostile_audio.lying_webm(40, claims=10)))
    assert isinstance(first, Notice) and first.kind is NoticeKind.NOTHING_HEARD  # a quiet tone, no speech
    assert stored_voice_turns(app)[0][0] == pytest.approx(40, abs=0.1)

    second = await last_event(service, note(hostile_audio.lying_webm(40, claims=10)))
    assert isinstance(second, Notice) and second.kind is NoticeKind.RATE_LIMITED
    assert second.text.startswith("That would take you over 1 minutes of voice in an hour")


# --- the CLI ---------------------------------------------------------------------------------


def test_iris_ask_refuses_a_two_hour_note_behind_a_ten_second_header(tmp_path: Path, served_gguf: Path) -> None:
    """Before: decoded to the end, 1.9 GB and 43 s, then "I didn't hear any speech"."""
    from tests.test_cli import IRIS

    hostile = tmp_path / "hostile.webm"
    hostile.write_bytes(hostile_audio.lying_webm(7200, claims=10))  # 6.2 MB
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_"))}
    env = {**inherited, "IRIS_DATA_DIR": str(tmp_path / "data"), "IRIS_LLM_MODEL": str(served_gguf)}
    result = subprocess.run(
        [sys.executable, "-c", PEAK_OF_CHILD, IRIS, "ask", "--voice", str(hostile)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    *logged, peak_kb = result.stderr.splitlines()
    assert result.returncode == 1
    assert result.stdout.strip() == "(That voice note is too long: I can take up to 300 s.)"
    assert "Traceback" not in result.stdout + "\n".join(logged)
    assert int(peak_kb) * 1024 < 700_000_000  # 300 MB here: whisper and the model are not even loaded


# A small parent for the command, so that its peak memory is its own: on Linux a child's
# ru_maxrss starts from its parent's resident size at fork, and pytest's holds the models.
PEAK_OF_CHILD = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


# --- the server path (IRIS_WHISPER_URL) ------------------------------------------------------


class RecordingWhisperServer(http.server.ThreadingHTTPServer):
    """An OpenAI-style ``/v1/audio/transcriptions`` on 127.0.0.1 that keeps every upload."""

    def __init__(self) -> None:
        self.uploads: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _Recorder)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Recorder(http.server.BaseHTTPRequestHandler):
    server: RecordingWhisperServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.uploads.append(body)
        answer = json.dumps({"text": "Hello there.", "language": "en", "duration": 10.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def whisper_server() -> Iterator[RecordingWhisperServer]:
    server = RecordingWhisperServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def uploaded_seconds(body: bytes) -> float:
    """The length of the audio file inside a multipart upload, by decoding it."""
    start = body.index(b"fLaC")
    return decode(body[start:], 3600).seconds


def test_the_server_gets_only_what_was_decoded(whisper_server: RecordingWhisperServer) -> None:
    transcriber = ServerTranscriber(WhisperConfig(url=whisper_server.url), ServerConfig(retries=0))
    with pytest.raises(AudioTooLong):
        transcriber.decode(hostile_audio.lying_webm(HOLDS_S, claims=10), LIMIT_S)
    assert whisper_server.uploads == []  # refused before anything is sent

    transcript = transcriber.transcribe(transcriber.decode(hostile_audio.lying_webm(40, claims=10), LIMIT_S))
    assert transcript.text == "Hello there."
    assert transcript.audio_seconds == pytest.approx(40, abs=0.1)  # charged by what was decoded
    (upload,) = whisper_server.uploads
    assert uploaded_seconds(upload) == pytest.approx(40, abs=0.1)
