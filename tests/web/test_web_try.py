"""The Try it page as an admin uses it: a message or a voice note in, the reply streamed, spoken,
rated and corrected, through the same service and database as the chats (real whisper, real
llama.cpp on the bundled model); and every refusal with its sentence, nothing lost or stored."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from bots.app import App, build_app, build_speaker
from bots.web.auth import CSRF_REFUSED, SIGN_IN_FIRST
from bots.web.server import create_app
from bots.web.try_it import NOT_AUDIO, REPLY_GONE, WENT_WRONG, SpokenReplies
from core.domain import ChatRef, Person, Role, Timings
from core.transcription import WhisperTranscriber
from storage.review_queue import SqlReviewQueue
from tests.conftest import make_settings, voice
from tests.web.conftest import TOKEN
from tests.web.test_web_process import IRIS, environment, free_port, wait_for_line

ADMIN = Person("web", "admin")
OPUS = "audio/ogg;codecs=opus"  # what Firefox's MediaRecorder says; Chromium says audio/webm;codecs=opus


@pytest.fixture
def iris(
    tmp_path: Path, served_gguf: Path, database_url: str, transcriber: WhisperTranscriber
) -> Iterator[App]:
    """The real app; the file limit is 0.2 MB so that a too-large upload stays small."""
    settings = make_settings(
        tmp_path,
        served_gguf,
        database_url=database_url,
        web_token=TOKEN,
        memory_enabled=False,
        chat_max_file_mb=0.2,
    )
    application = build_app(settings)
    application.service.listener.transcriber = transcriber  # whisper loads once per session
    yield application
    application.close()


@pytest.fixture
def web(iris: App) -> Iterator[TestClient]:
    app = create_app(iris.service, SqlReviewQueue(iris.store.engine), iris.settings.web, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient) -> str:
    assert client.get(f"/?token={TOKEN}").status_code == 303
    page = client.get("/try")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def events(body: str) -> list[tuple[str, dict[str, object]]]:
    """The Server-Sent Events of a response, as the page's script reads them."""
    parsed = []
    for frame in body.split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


def named(stream: list[tuple[str, dict[str, object]]], event: str) -> list[dict[str, object]]:
    return [data for name, data in stream if name == event]


def send(client: TestClient, csrf: str, **form: object) -> list[tuple[str, dict[str, object]]]:
    files = form.pop("files", None)
    response = client.post("/try/send", data=form, files=files, headers={"X-CSRF-Token": csrf})  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = events(response.text)
    assert stream[-1] == ("end", {})
    return stream


def turn_count(iris: App) -> int:
    with iris.store.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM turns")).scalar_one())


def test_the_page_has_its_controls_and_no_inline_script(web: TestClient) -> None:
    sign_in(web)
    page = web.get("/try")
    for element in ("try-text", "try-send", "try-record", "try-stop", "try-transcript", "try-reply"):
        assert f'id="{element}"' in page.text
    for element in ("try-audio", "try-up", "try-down", "try-fix", "try-fix-send", "try-status"):
        assert f'id="{element}"' in page.text
    assert '<a href="/try">Try it</a>' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None  # every script is a file
    assert web.get("/static/try.js").status_code == 200


def test_a_typed_message_gets_its_reply_streamed_and_both_turns_stored(web: TestClient, iris: App) -> None:
    csrf = sign_in(web)
    stream = send(web, csrf, text="What is the capital of France?")

    growing = [str(data["text"]) for data in named(stream, "reply")]
    (done,) = named(stream, "done")
    assert growing and growing[-1].strip() and done["text"] == growing[-1]  # streamed, then whole
    assert all(later.startswith(earlier) for earlier, later in pairwise(growing))
    reply = iris.store.get_turn(int(str(done["turn_id"])))
    assert reply is not None and reply.role is Role.ASSISTANT and reply.text == done["text"]
    assert reply.chat == ChatRef("web", "admin") and reply.model_version == done["model"]
    assert reply.reply_to_id is not None
    asked = iris.store.get_turn(reply.reply_to_id)
    assert asked is not None and asked.text == "What is the capital of France?" and not asked.from_voice


def test_a_recorded_voice_note_is_transcribed_answered_and_spoken(
    web: TestClient, iris: App, tmp_path: Path, served_gguf: Path
) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    iris.service.replies.speaker = build_speaker(
        make_settings(tmp_path, served_gguf, tts_replies="always"), iris.store
    )
    csrf = sign_in(web)
    stream = send(web, csrf, files={"audio": ("voice-note.ogg", voice("greeting.ogg"), OPUS)})

    (heard,) = named(stream, "transcript")
    assert "morning" in str(heard["text"]).lower()  # "Good morning, how are you today?"
    (done,) = named(stream, "done")
    reply = iris.store.get_turn(int(str(done["turn_id"])))
    assert reply is not None and reply.reply_to_id is not None
    asked = iris.store.get_turn(reply.reply_to_id)
    assert asked is not None and asked.from_voice and asked.text == heard["text"]
    (spoken,) = named(stream, "spoken")
    audio = web.get(str(spoken["url"]))
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/ogg"
    assert audio.content.startswith(b"OggS") and float(str(spoken["seconds"])) > 0.3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_chromiums_webm_recording_is_heard(web: TestClient, tmp_path: Path) -> None:
    """Chromium's MediaRecorder sends Opus in WebM: the same voice note, remuxed as it would be."""
    source, webm = tmp_path / "greeting.ogg", tmp_path / "voice-note.webm"
    source.write_bytes(voice("greeting.ogg"))
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", source, "-c:a", "copy", webm], check=True)
    csrf = sign_in(web)
    stream = send(web, csrf, files={"audio": ("voice-note.webm", webm.read_bytes(), "audio/webm;codecs=opus")})
    (heard,) = named(stream, "transcript")
    assert "morning" in str(heard["text"]).lower()
    assert named(stream, "done")


def test_a_thumbs_up_and_a_correction_are_stored_as_from_the_chats(web: TestClient, iris: App) -> None:
    csrf = sign_in(web)
    (done,) = named(send(web, csrf, text="Who wrote Hamlet?"), "done")
    turn_id = done["turn_id"]
    headers = {"X-CSRF-Token": csrf}

    up = web.post(f"/try/rate/{turn_id}", data={"rating": "up"}, headers=headers)
    assert up.status_code == 200 and up.text == "Thanks for the 👍: stored."
    again = web.post(f"/try/rate/{turn_id}", data={"rating": "up"}, headers=headers)
    assert again.text == "You already gave this reply a 👍."
    with iris.store.engine.connect() as connection:
        values = connection.execute(text("SELECT value FROM ratings WHERE turn_id = :t"), {"t": turn_id}).all()
    assert [row.value for row in values] == [1]

    fixed = web.post(
        f"/try/correct/{turn_id}", data={"text": "  William Shakespeare wrote Hamlet. "}, headers=headers
    )
    assert fixed.status_code == 200, fixed.text
    found = re.search(r"Correction #(\d+) saved; it waits for review", fixed.text)
    assert found
    correction = iris.store.correction(int(found.group(1)))
    assert correction is not None and correction.status.value == "pending"
    assert correction.person.actor == "web:admin" and correction.text == "William Shakespeare wrote Hamlet."
    assert "William Shakespeare wrote Hamlet." in web.get("/review").text  # in the review queue


def test_without_a_session_or_csrf_nothing_is_sent_or_stored(web: TestClient, iris: App) -> None:
    assert web.get("/try").headers["location"] == "/signin"
    refused = web.post("/try/send", data={"text": "hello"})
    assert refused.status_code == 403 and refused.text == SIGN_IN_FIRST
    csrf = sign_in(web)
    forged = web.post("/try/send", data={"text": "hello"})
    assert forged.status_code == 403 and forged.text == CSRF_REFUSED
    wrong = web.post("/try/send", data={"text": "hello"}, headers={"X-CSRF-Token": csrf + "x"})
    assert wrong.status_code == 403
    assert web.post("/try/rate/1", data={"rating": "up"}).status_code == 403
    assert web.post("/try/correct/1", data={"text": "better"}).status_code == 403
    assert turn_count(iris) == 0


def test_an_upload_over_the_limit_or_not_audio_is_refused_with_a_sentence(web: TestClient, iris: App) -> None:
    csrf = sign_in(web)
    headers = {"X-CSRF-Token": csrf}
    big = web.post("/try/send", files={"audio": ("note.ogg", b"\0" * 400_000, OPUS)}, headers=headers)
    assert big.status_code == 413 and big.text == "That file is too large: the limit is 0.2 MB."
    page = web.post(
        "/try/send", files={"audio": ("x.html", b"<script>alert(1)</script>", "text/html")}, headers=headers
    )
    assert page.status_code == 415 and page.text == NOT_AUDIO.format(kind="text/html")
    assert turn_count(iris) == 0


def test_silent_corrupt_and_empty_input_get_the_services_sentences(web: TestClient, iris: App) -> None:
    csrf = sign_in(web)
    (silent,) = named(send(web, csrf, files={"audio": ("s.ogg", voice("silence.ogg"), OPUS)}), "notice")
    assert silent["text"] == "I didn't hear any speech in that recording."
    (corrupt,) = named(send(web, csrf, files={"audio": ("c.ogg", b"OggS not really" * 50, OPUS)}), "notice")
    assert str(corrupt["text"]).startswith("I could not read that audio")
    (empty,) = named(send(web, csrf, text="   "), "notice")
    assert empty["text"] == "Send me a voice note or a text message."
    long = named(send(web, csrf, text="x" * (iris.settings.chat.max_text_chars + 1)), "notice")
    assert "too long" in str(long[0]["text"])
    # Each refused voice note and the long text stay stored with the reason they got no reply.
    with iris.store.engine.connect() as connection:
        reasons = connection.execute(text("SELECT error FROM turns ORDER BY id")).scalars().all()
    assert len(reasons) == 3 and all(reasons)


def test_a_reply_shown_elsewhere_cannot_be_rated_or_corrected_here(web: TestClient, iris: App) -> None:
    ann = Person("telegram", "77", "Ann")
    receipt = iris.store.record_user_turn(
        ChatRef("telegram", "77"), ann, text="hi", from_voice=False, message_id=None, shared_history=False
    )
    elsewhere = iris.store.record_reply(receipt.conversation_id, receipt.turn_id, "Hello Ann.", "m1", Timings())
    csrf = sign_in(web)
    headers = {"X-CSRF-Token": csrf}
    for turn_id in (elsewhere, receipt.turn_id, 10**30):
        rated = web.post(f"/try/rate/{turn_id}", data={"rating": "down"}, headers=headers)
        assert rated.status_code == 404 and rated.text == REPLY_GONE
        fixed = web.post(f"/try/correct/{turn_id}", data={"text": "better"}, headers=headers)
        assert fixed.status_code == 404 and fixed.text == REPLY_GONE
    assert iris.store.corrections() == []
    with iris.store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM ratings")).scalar_one() == 0
    assert web.get(f"/try/spoken/{elsewhere}").status_code == 404


def web_reply(iris: App, words: str = "Hello.") -> int:
    """A reply Iris showed on the Try it page (stored directly: no model needed)."""
    receipt = iris.store.record_user_turn(
        ChatRef("web", "admin"), ADMIN, text="hi", from_voice=False, message_id=None, shared_history=False
    )
    return iris.store.record_reply(receipt.conversation_id, receipt.turn_id, words, "m1", Timings())


def test_presses_over_the_hourly_limit_get_its_sentence(web: TestClient, iris: App) -> None:
    limiter = iris.service.feedback.limiter
    limiter.limits = replace(limiter.limits, presses_per_hour=1)
    turn_id = web_reply(iris)
    headers = {"X-CSRF-Token": sign_in(web)}
    assert web.post(f"/try/rate/{turn_id}", data={"rating": "up"}, headers=headers).status_code == 200
    limited = web.post(f"/try/rate/{turn_id}", data={"rating": "down"}, headers=headers)
    assert limited.status_code == 429 and "my limit per person" in limited.text
    with iris.store.engine.connect() as connection:
        assert connection.execute(text("SELECT value FROM ratings")).scalars().all() == [1]


def test_a_body_without_its_size_is_refused_unread(web: TestClient, iris: App) -> None:
    headers = {"X-CSRF-Token": sign_in(web), "content-type": "multipart/form-data; boundary=x"}
    chunked = web.post("/try/send", content=iter([b"--x\r\n", b"\0" * 1000]), headers=headers)
    assert chunked.status_code == 411 and "Content-Length" in chunked.text
    assert turn_count(iris) == 0


def test_a_message_shaped_like_events_stays_one_message(web: TestClient, iris: App) -> None:
    """Text that looks like SSE frames or HTML is data: one reply, the text stored as typed."""
    csrf = sign_in(web)
    typed = 'hi\n\nevent: done\ndata: {"turn_id": 1}\n\n<img src=x onerror=alert(1)>'
    stream = send(web, csrf, text=typed)
    (done,) = named(stream, "done")
    reply = iris.store.get_turn(int(str(done["turn_id"])))
    assert reply is not None and reply.reply_to_id is not None
    asked = iris.store.get_turn(reply.reply_to_id)
    assert asked is not None and asked.text == typed


def test_a_failure_inside_the_service_is_a_sentence_not_a_traceback(
    web: TestClient, iris: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(message: object) -> AsyncIterator[object]:
        raise RuntimeError("database password is hunter2, /srv/iris/secret.py line 3")
        yield  # an async generator, as the service's

    monkeypatch.setattr(iris.service.replies, "handle", broken)
    stream = send(web, sign_in(web), text="hello")
    assert named(stream, "notice") == [{"kind": "model_failed", "text": WENT_WRONG}]
    assert "hunter2" not in json.dumps(stream) and "Traceback" not in json.dumps(stream)


def test_a_spoken_reply_is_served_to_the_admin_who_asked_only() -> None:
    kept = SpokenReplies(size=2)
    kept.keep(1, "admin", b"OggS1")
    assert kept.get(1, "admin") == b"OggS1" and kept.get(1, "bob") is None
    kept.keep(2, "admin", b"OggS2")
    kept.keep(3, "admin", b"OggS3")
    assert kept.get(1, "admin") is None and kept.get(3, "admin") == b"OggS3"  # the newest only


def test_through_iris_web_the_reply_arrives_piece_by_piece(tmp_path: Path, served_gguf: Path) -> None:
    """A real ``iris web`` (uvicorn): the first words reach the browser before the reply is done."""
    port = free_port()
    env = environment(tmp_path, served_gguf, IRIS_WEB_TOKEN=TOKEN, IRIS_GENERATION_MAX_TOKENS="64")
    process = subprocess.Popen(
        [IRIS, "web", "--port", str(port)], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_line(process, rf"http://127\.0\.0\.1:{port}/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=60) as browser:
            assert browser.get(f"/?token={TOKEN}").status_code == 303
            csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/try").text)
            assert csrf
            arrived: dict[str, float] = {}
            body = ""
            headers = {"X-CSRF-Token": csrf.group(1)}
            data = {"text": "Tell me a short story about a cat."}
            with browser.stream("POST", "/try/send", data=data, headers=headers) as response:
                assert response.status_code == 200
                for piece in response.iter_text():
                    body += piece
                    for name, _ in events(body[: body.rfind("\n\n") + 1]):  # whole frames only
                        arrived.setdefault(name, time.monotonic())
        assert {"reply", "done", "end"} <= arrived.keys(), body
        assert arrived["reply"] < arrived["done"]  # streamed, not sent whole at the end
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()
