"""Admins with sign-in links of their own (``iris web admin``), on SQLite and PostgreSQL: each is
audited under their own name, a removed admin's session and link stop working in every process,
the database holds hashes only, and a bad name is refused in one line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bots.app import App, database_url
from core.web_admins import AdminNameTaken, BadAdminName, add_admin
from storage.database import make_engine
from storage.web_admins import SqlWebAdmins
from tests.web.conftest import QUESTIONS, console_app, sign_in

HTMX = {"HX-Request": "true"}
IRIS = str(Path(sys.executable).with_name("iris"))


def add(iris: App, name: str) -> str:
    """Add an admin as ``iris web admin add`` does; their sign-in token."""
    _, token = add_admin(SqlWebAdmins(iris.store.engine), name, "console:test", iris.settings.web.admin_name)
    return token


@contextmanager
def browser(app: Starlette) -> Iterator[TestClient]:
    """A browser of its own: its own cookies."""
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        yield client


def decide(client: TestClient, csrf: str, correction_id: int, action: str, text: str = "") -> str:
    response = client.post(
        f"/review/{correction_id}",
        data={"action": action, "text": text},
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert response.status_code == 200, response.text
    return response.text


def test_two_admins_each_sign_in_with_their_own_link_and_are_audited_by_name(
    iris: App, corrections: list[int]
) -> None:
    app = console_app(iris)
    ann_token, bob_token = add(iris, "ann"), add(iris, "bob.k")
    with browser(app) as ann, browser(app) as bob:
        ann_csrf, bob_csrf = sign_in(ann, ann_token), sign_in(bob, bob_token)
        assert "<span>web:ann</span>" in ann.get("/review").text  # who is signed in, in the header
        approved = decide(ann, ann_csrf, corrections[0], "approve", QUESTIONS[0][2])
        rejected = decide(bob, bob_csrf, corrections[1], "reject")
    assert "approved by web:ann" in approved and "rejected by web:bob.k" in rejected
    trail = {(e.actor, e.action.value, e.target) for e in iris.store.audit_entries()}
    assert ("web:ann", "review.approve", f"correction:{corrections[0]}") in trail
    assert ("web:bob.k", "review.reject", f"correction:{corrections[1]}") in trail
    reviewers = [iris.store.correction(c).reviewer for c in corrections[:2]]  # type: ignore[union-attr]
    assert reviewers == ["web:ann", "web:bob.k"]


def test_the_deployment_token_still_signs_in_as_its_admin_name(web: TestClient, iris: App) -> None:
    add(iris, "ann")
    sign_in(web)
    assert "<span>web:admin</span>" in web.get("/review").text


def test_a_removed_admin_is_refused_at_the_next_request_and_their_link_no_longer_signs_in(
    iris: App, corrections: list[int]
) -> None:
    token = add(iris, "carol")
    with browser(console_app(iris)) as carol:
        csrf = sign_in(carol, token)
        # Removed from another process: its own engine on the same database.
        other = make_engine(database_url(iris.settings))
        try:
            assert SqlWebAdmins(other).remove_admin("carol")
        finally:
            other.dispose()
        page = carol.get("/review")
        assert page.status_code == 303 and page.headers["location"] == "/signin"
        refused = carol.post(f"/review/{corrections[0]}", data={"action": "approve", "csrf": csrf})
        assert refused.status_code == 403 and "Sign in first" in refused.text
        assert carol.get(f"/?token={token}").status_code == 403
        # Added again under the same name: a new link, and the old session still ends.
        new_token = add(iris, "carol")
        assert carol.get("/review").status_code == 303
        sign_in(carol, new_token)
        assert carol.get("/review").status_code == 200
    assert iris.store.correction(corrections[0]).status.value == "pending"  # type: ignore[union-attr]


def test_the_database_holds_no_token_in_clear_and_the_log_never_shows_one(
    iris: App, caplog: pytest.LogCaptureFixture
) -> None:
    token = add(iris, "dana")
    with caplog.at_level(logging.DEBUG), browser(console_app(iris)) as dana:
        sign_in(dana, token)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("bots", "core", "storage", "uvicorn"))]
    assert "web:dana signed in from testclient" in ours  # (the test's own HTTP client logs its URLs)
    assert not any(token in line for line in ours)
    with iris.store.engine.connect() as connection:
        stored = [str(value) for row in connection.execute(text("SELECT * FROM web_admins")) for value in row]
        audit = [str(v) for row in connection.execute(text("SELECT * FROM audit_log")) for v in row]
    assert not any(token in value for value in stored + audit)
    assert hashlib.sha256(token.encode()).hexdigest() in stored


@pytest.mark.parametrize(
    "name",
    ["", "two words", "tab\there", "x" * 33, "evil\u202etxt", "zero\u200bwidth", "bell\x07", "line\nbreak"],
)
def test_a_bad_name_is_refused_in_one_line(iris: App, name: str) -> None:
    with pytest.raises(BadAdminName) as refused:
        add(iris, name)
    assert "\n" not in str(refused.value)
    assert SqlWebAdmins(iris.store.engine).list_admins() == []


def test_names_are_unique_whatever_their_case_and_the_token_admin_keeps_its_own(iris: App) -> None:
    add(iris, "Élodie")
    with pytest.raises(AdminNameTaken):
        add(iris, "éLODIE")
    with pytest.raises(BadAdminName, match="IRIS_WEB_ADMIN_NAME"):
        add(iris, "Admin")  # the name IRIS_WEB_TOKEN signs in as
    assert [a.name for a in SqlWebAdmins(iris.store.engine).list_admins()] == ["Élodie"]


def iris_cli(iris: App, *args: str) -> subprocess.CompletedProcess[str]:
    """``iris`` as an admin types it, on the test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "DATABASE_URL"))}
    env.update(IRIS_DATA_DIR=str(iris.settings.data_dir), DATABASE_URL=database_url(iris.settings))
    return subprocess.run([IRIS, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_cli_adds_lists_and_removes_admins_and_its_link_signs_in(iris: App) -> None:
    added = iris_cli(iris, "web", "admin", "add", "erin")
    assert added.returncode == 0, added.stderr
    link = added.stdout.strip()
    assert link.startswith("http://127.0.0.1:8080/?token=") and "Traceback" not in added.stderr
    with browser(console_app(iris)) as erin:
        sign_in(erin, link.rsplit("=", 1)[1])
        assert "<span>web:erin</span>" in erin.get("/review").text
        listed = iris_cli(iris, "web", "admin", "list", "--json")
        assert [a["name"] for a in json.loads(listed.stdout)] == ["erin"]
        assert link.rsplit("=", 1)[1] not in listed.stdout + listed.stderr
        bad = iris_cli(iris, "web", "admin", "add", "two words")
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
        assert bad.stderr.startswith("not added: ")
        removed = iris_cli(iris, "web", "admin", "remove", "erin")
        assert removed.returncode == 0, removed.stderr
        assert erin.get("/review").status_code == 303
    again = iris_cli(iris, "web", "admin", "remove", "erin")
    assert again.returncode == 1 and "no admin is named 'erin'" in again.stderr
    trail = [(e.actor.startswith("console:"), e.action.value, e.target) for e in iris.store.audit_entries()]
    assert (True, "web_admin.add", "web:erin") in trail and (True, "web_admin.remove", "web:erin") in trail
    with iris.store.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM web_admins")) == 0


def test_hostile_sign_in_links_open_no_session(iris: App) -> None:
    """A 4,000-character token, an admin's token with a byte changed or in another case, NUL and bidi
    characters, SQL: each gets the refused sign-in page, and no session is opened."""
    token = add(iris, "erin")
    hostile = [
        "x" * 4_000,
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token.upper() if token.upper() != token else token.lower(),
        token + "\x00",
        "\u202e" + token,
        "' OR 1=1 --",
        "",
    ]
    with browser(console_app(iris)) as someone:
        for given in hostile:
            response = someone.get("/", params={"token": given})
            assert response.status_code == 403, given[:40]
            assert "iris_session=" not in response.headers.get("set-cookie", "")
            assert someone.get("/review").status_code == 303  # still signed out
        assert someone.get("/", params={"token": token}).status_code == 303  # the real one still works
