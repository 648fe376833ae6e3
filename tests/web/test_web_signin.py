"""Sign-in to the console: the link, the cookie, and refusals without a session or CSRF token."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from bots.app import App
from tests.web.conftest import TOKEN, sign_in

PAGES = ["/review", "/review?status=approved", "/"]
ACTIONS = ["/review/1", "/signout"]


def test_without_a_session_every_page_and_action_is_refused(
    web: TestClient, iris: App, corrections: list[int]
) -> None:
    for path in PAGES:
        response = web.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/signin", path
    for path in ACTIONS:
        response = web.post(path, data={"action": "approve", "csrf": "x"})
        assert response.status_code == 403, path
        assert "Sign in first" in response.text
    signin = web.get("/signin")
    assert signin.status_code == 200 and "Sign in" in signin.text and "Hamlet" not in signin.text
    assert all(c.status.value == "pending" for c in iris.store.corrections())


def test_a_forged_or_foreign_cookie_is_no_session(web: TestClient) -> None:
    web.cookies.set("iris_session", "eyJuYW1lIjoiYWRtaW4iLCJjc3JmIjoieCJ9.forged.sig")
    assert web.get("/review").status_code == 303


def test_a_wrong_token_is_refused_and_logged_without_it(
    web: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        response = web.get("/?token=not-the-token")
    assert response.status_code == 403
    assert "not valid" in response.text
    assert "set-cookie" not in response.headers
    assert "wrong token" in caplog.text and "not-the-token" not in caplog.text
    assert web.get("/review").status_code == 303


def test_the_sign_in_link_sets_a_strict_http_only_cookie_and_drops_the_token(web: TestClient) -> None:
    response = web.get(f"/?token={TOKEN}")
    assert response.status_code == 303
    assert response.headers["location"] == "/review"  # no token left in the address
    cookie = response.headers["set-cookie"].lower()
    assert "iris_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # plain http on 127.0.0.1 (IRIS_WEB_SECURE_COOKIE is off)
    assert TOKEN not in response.headers["set-cookie"]
    page = web.get("/review")
    assert page.status_code == 200 and "Review" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"


def test_behind_https_the_cookie_is_secure(iris: App) -> None:
    from dataclasses import replace

    from bots.web.server import create_app
    from storage.review_queue import SqlReviewQueue

    config = replace(iris.settings.web, secure_cookie=True)
    app = create_app(iris.service, SqlReviewQueue(iris.store.engine), config, TOKEN)
    with TestClient(app, base_url="https://iris.example", follow_redirects=False) as client:
        response = client.get(f"/?token={TOKEN}")
        assert "secure" in response.headers["set-cookie"].lower()


def test_an_expired_session_is_refused(iris: App, monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from dataclasses import replace

    from bots.web.server import create_app
    from storage.review_queue import SqlReviewQueue

    config = replace(iris.settings.web, session_hours=0.0)  # the floor: one minute
    app = create_app(iris.service, SqlReviewQueue(iris.store.engine), config, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        client.get(f"/?token={TOKEN}")
        assert client.get("/review").status_code == 200
        later = time.time() + 120
        monkeypatch.setattr(time, "time", lambda: later)
        assert client.get("/review").status_code == 303


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_nothing_stored(
    web: TestClient, iris: App, corrections: list[int]
) -> None:
    sign_in(web)
    first = corrections[0]
    no_token = web.post(f"/review/{first}", data={"action": "approve"})
    wrong = web.post(f"/review/{first}", data={"action": "approve", "csrf": "forged"})
    wrong_header = web.post(
        f"/review/{first}", data={"action": "reject"}, headers={"X-CSRF-Token": "forged", "HX-Request": "true"}
    )
    for response in (no_token, wrong, wrong_header):
        assert response.status_code == 403
        assert "CSRF check failed" in response.text
    assert iris.store.correction(first).status.value == "pending"  # type: ignore[union-attr]
    assert not [e for e in iris.store.audit_entries() if e.actor.startswith("web:")]


def test_sign_out_ends_the_session_in_this_browser(web: TestClient) -> None:
    csrf = sign_in(web)
    assert web.post("/signout", data={"csrf": csrf}).status_code == 303
    assert web.get("/review").status_code == 303
