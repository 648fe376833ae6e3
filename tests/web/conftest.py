"""The console against the real app (``bots.app.build_app``) on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from starlette.testclient import TestClient

from bots.app import App, build_app, console_records
from bots.web.server import create_app
from core.domain import ChatRef, Person, Timings
from storage.review_queue import SqlReviewQueue
from storage.web_admins import SqlWebAdmins
from tests.conftest import FIXTURES, make_settings

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from starlette.applications import Starlette

    from tests.web.browser import Console

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


def seed(
    application: App, questions: list[tuple[str, str, str]] = QUESTIONS, model: str = "m1", person: Person = ANN
) -> list[int]:
    """Ann (or ``person``) asked each question in her own chat, Iris answered wrongly, and she proposed
    a better answer."""
    store = application.store
    ids = []
    for question, reply, better in questions:
        receipt = store.record_user_turn(
            ChatRef(person.platform, person.user_id),
            person,
            text=question,
            from_voice=False,
            message_id=None,
            shared_history=False,
        )
        reply_id = store.record_reply(receipt.conversation_id, receipt.turn_id, reply, model, Timings())
        store.rate(person, reply_id, -1)
        ids.append(store.add_correction(person, reply_id, better))
    return ids


@pytest.fixture
def corrections(iris: App) -> list[int]:
    return seed(iris)


@pytest.fixture
def web(iris: App) -> Iterator[TestClient]:
    """A browser that has not signed in (https base URL: a Secure cookie would be sent too)."""
    with TestClient(console_app(iris), base_url="http://127.0.0.1", follow_redirects=False) as client:
        yield client


def console_app(iris: App) -> Starlette:
    """The console as ``iris web`` builds it: every page, and the admins' own sign-in links."""
    queue = SqlReviewQueue(iris.store.engine)
    admins = SqlWebAdmins(iris.store.engine)
    return create_app(iris.service, queue, iris.settings.web, TOKEN, console_records(iris.store), admins)


def sign_in(client: TestClient, token: str = TOKEN) -> str:
    """Open the sign-in link (the deployment's, or ``token``: an admin's own); the page's CSRF token."""
    response = client.get(f"/?token={token}")
    assert response.status_code == 303, response.text
    page = client.get("/review")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


# --- the browser tests (tests/web/test_browser_*.py, harness in tests/web/browser.py) -------------


@pytest.fixture(scope="session")
def fake_microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Chromium's fake microphone says: "Good morning, how are you today?" (a voice fixture)."""
    from tests.web.browser import fake_microphone_wav

    out = tmp_path_factory.mktemp("microphone") / "greeting.wav"
    return fake_microphone_wav(FIXTURES / "greeting.ogg", out)


@pytest.fixture
def browser(fake_microphone: Path, tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium (Debian's, through chromium-driver), quit after the test; the page it
    was left on must show no traceback."""
    from tests.web import browser as harness

    if reason := harness.missing():
        pytest.skip(reason)
    driver = harness.chromium(fake_microphone, tmp_path / "downloads")
    try:
        yield driver
        assert "Traceback" not in driver.page_source
    finally:
        driver.quit()


@pytest.fixture
def console(iris: App, tmp_path: Path, served_gguf: Path, database_url: str) -> Iterator[Console]:
    """``iris web`` as a real process on the database ``iris`` seeds and reads back."""
    from tests.web.browser import iris_web

    with iris_web(
        tmp_path, served_gguf, TOKEN, DATABASE_URL=database_url, IRIS_MEMORY_ENABLED="false"
    ) as running:
        yield running
