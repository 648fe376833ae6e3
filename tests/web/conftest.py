"""The console against the real app (``bots.app.build_app``) on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bots.app import App, build_app
from bots.web.server import create_app
from core.domain import ChatRef, Person, Timings
from storage.review_queue import SqlReviewQueue
from tests.conftest import make_settings

TOKEN = "s3cret-sign-in-token"
ANN = Person("telegram", "77", "Ann")
QUESTIONS = [
    ("Who wrote Hamlet?", "Charles Dickens.", "William Shakespeare wrote Hamlet."),
    ("What is 6 times 7?", "It is 48.", "6 times 7 is 42."),
    ("Name a prime number.", "Nine.", "Banana."),
]


@pytest.fixture
def iris(tmp_path: Path, served_gguf: Path, database_url: str) -> Iterator[App]:
    settings = make_settings(
        tmp_path, served_gguf, database_url=database_url, web_token=TOKEN, memory_enabled=False
    )
    application = build_app(settings)
    yield application
    application.close()


def seed(application: App, questions: list[tuple[str, str, str]] = QUESTIONS, model: str = "m1") -> list[int]:
    """Ann asked each question in one chat, Iris answered wrongly, and Ann proposed a better answer."""
    store = application.store
    ids = []
    for question, reply, better in questions:
        receipt = store.record_user_turn(
            ChatRef("telegram", "77"),
            ANN,
            text=question,
            from_voice=False,
            message_id=None,
            shared_history=False,
        )
        reply_id = store.record_reply(receipt.conversation_id, receipt.turn_id, reply, model, Timings())
        store.rate(ANN, reply_id, -1)
        ids.append(store.add_correction(ANN, reply_id, better))
    return ids


@pytest.fixture
def corrections(iris: App) -> list[int]:
    return seed(iris)


@pytest.fixture
def web(iris: App) -> Iterator[TestClient]:
    """A browser that has not signed in (https base URL: a Secure cookie would be sent too)."""
    app = create_app(iris.service, SqlReviewQueue(iris.store.engine), iris.settings.web, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient) -> str:
    """Open the sign-in link; the page's CSRF token."""
    response = client.get(f"/?token={TOKEN}")
    assert response.status_code == 303, response.text
    page = client.get("/review")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)
