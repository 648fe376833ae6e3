"""The Audit and People pages as an admin uses them, on SQLite and PostgreSQL: the trail searched and
paged, a person's stored data, their consent, and /forget on their behalf deleting what the chat's
/forget deletes."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, func, select
from starlette.testclient import TestClient

from bots.app import App, database_url
from core.domain import AuditAction, Person
from storage.database import make_engine
from storage.queries import speakers
from storage.repository import SqlStore
from storage.tables import AuditRow, ConversationRow, CorrectionRow, PersonRow, RatingRow, TurnRow
from tests.web.conftest import ANN, QUESTIONS, seed, sign_in

BOB = Person("telegram", "88", "Bob")
CARL = Person("discord", "99", "Carl")
XSS = "<img src=x onerror=alert(1)>"
ANN_PAGE = "/people/show?platform=telegram&user=77"


def rows(iris: App, table: Any, *where: Any) -> int:
    with iris.store.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(table).where(*where)) or 0


def consent_of(iris: App, user_id: str) -> bool | None:
    (found,) = [s for s in speakers(iris.store.engine).values() if s.person.user_id == user_id]
    return found.consent


def audit_ids(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-audit-id="(\d+)">', page)]


# --- refused without a session or a CSRF token --------------------------------------------------


def test_every_page_and_action_is_refused_without_a_session(web: TestClient, iris: App) -> None:
    seed(iris)
    for path in ("/audit", "/people", "/people?q=ann", ANN_PAGE, "/people/forget?platform=telegram&user=77"):
        response = web.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/signin", path
    form = {"platform": "telegram", "user": "77", "confirm": "yes", "consent": "no"}
    assert web.post("/people/forget", data=form).status_code == 403
    assert web.post("/people/consent", data=form).status_code == 403
    assert rows(iris, TurnRow) == 6 and consent_of(iris, "77") is None  # nothing changed


def test_a_post_without_the_csrf_token_changes_nothing(web: TestClient, iris: App) -> None:
    seed(iris)
    sign_in(web)
    form = {"platform": "telegram", "user": "77", "confirm": "yes", "consent": "no", "csrf": "forged"}
    assert web.post("/people/forget", data=form).status_code == 403
    assert web.post("/people/consent", data=form).status_code == 403
    assert rows(iris, TurnRow) == 6 and rows(iris, PersonRow) == 1
    assert not [e for e in iris.store.audit_entries() if e.action in (AuditAction.FORGET, AuditAction.CONSENT)]


# --- Audit ----------------------------------------------------------------------------------------


def write_trail(iris: App) -> None:
    for n in range(120):
        actor = "web:admin" if n % 3 == 0 else f"telegram:{n}"
        action = AuditAction.REVIEW_APPROVE if n % 2 else AuditAction.CONSENT
        iris.store.record_audit(actor, action, f"correction:{n}", {"turn": n, "note": f"line {n}"})
    iris.store.record_audit("web:admin", AuditAction.PERSONA_EDIT, XSS, {"prompt": XSS, "version": 2})


def test_the_trail_is_newest_first_and_paged(web: TestClient, iris: App) -> None:
    write_trail(iris)
    sign_in(web)
    first = web.get("/audit")
    assert first.status_code == 200
    ids = audit_ids(first.text)
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    assert ids[0] == max(e.id for e in iris.store.audit_entries())
    older = re.search(r'<a href="([^"]+)" rel="next" id="audit-older">', first.text)
    assert older
    second = audit_ids(web.get(html_unescape(older.group(1))).text)
    assert len(second) == 50 and max(second) < min(ids)  # no line twice, none skipped
    assert second[0] == ids[-1] - 1


def html_unescape(url: str) -> str:
    return url.replace("&amp;", "&")


def test_the_trail_is_searched_by_actor_action_words_and_days(web: TestClient, iris: App) -> None:
    write_trail(iris)
    sign_in(web)
    by_actor = web.get("/audit?actor=web:admin&action=consent").text
    expected = [
        e for e in iris.store.audit_entries() if e.actor == "web:admin" and e.action is AuditAction.CONSENT
    ]
    assert sorted(audit_ids(by_actor)) == sorted(e.id for e in expected) and expected
    words = web.get("/audit?q=LINE 7").text  # in the details, any case: lines 7 and 70-79
    assert len(audit_ids(words)) == 11
    percent = web.get("/audit?q=100%25").text  # a % is matched as itself, not as a wildcard
    assert audit_ids(percent) == []
    today = datetime.now(UTC).date()
    assert len(audit_ids(web.get(f"/audit?since={today}&until={today}").text)) == 50
    tomorrow = today + timedelta(days=1)
    assert "No audit lines match this search." in web.get(f"/audit?since={tomorrow}").text
    bad = web.get("/audit?since=yesterday")
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
    assert web.get("/audit?action=drop.tables").status_code == 400


def test_non_ascii_words_are_found_as_typed_in_old_and_new_lines(web: TestClient, iris: App) -> None:
    # A line as Iris wrote them before: JSON with \uXXXX escapes (json.dumps' default).
    old = make_engine(database_url(iris.settings), json_serializer=json.dumps)
    try:
        details = {"text": "Crème brûlé"}
        SqlStore(old).record_audit("web:admin", AuditAction.REVIEW_EDIT, "correction:1", details)
    finally:
        old.dispose()
    iris.store.record_audit("web:admin", AuditAction.REVIEW_EDIT, "correction:2", {"text": 'Élodie\'s "café"'})
    iris.store.record_audit("web:admin", AuditAction.REVIEW_EDIT, "correction:3", {"text": "plain words"})
    (old_id, new_id, _) = [e.id for e in iris.store.audit_entries()]
    with iris.store.engine.connect() as connection:
        stored = connection.scalar(select(cast(AuditRow.details, String)).where(AuditRow.id == new_id))
    assert "Élodie" in stored  # new lines keep the characters, not escapes
    sign_in(web)

    def found(words: str) -> set[int]:
        response = web.get("/audit", params={"q": words})
        assert response.status_code == 200
        return set(audit_ids(response.text))

    assert found("é") == {old_id, new_id}
    assert found("brûlé") == found("BRÛLÉ") == found("crème") == {old_id}
    assert found("élodie") == found("ÉLODIE") == {new_id}  # any case, SQLite's lower() too
    assert found('"café"') == {new_id}  # a quote, stored escaped in the JSON
    assert found("ü") == set()


def test_hostile_text_in_the_trail_is_shown_escaped(web: TestClient, iris: App) -> None:
    write_trail(iris)
    sign_in(web)
    page = web.get("/audit?action=persona.edit").text
    assert XSS not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


# --- People ---------------------------------------------------------------------------------------


def test_a_person_is_found_and_what_is_stored_about_them_is_shown(web: TestClient, iris: App) -> None:
    seed(iris)
    sign_in(web)
    found = web.get("/people?q=an")
    assert found.status_code == 200 and 'data-person="telegram:77"' in found.text and "Ann" in found.text
    assert web.get("/people?q=telegram:77").headers["location"] == ANN_PAGE
    page = web.get(ANN_PAGE).text
    record = dict(re.findall(r'<dd data-field="([a-z_]+)">([^<]*)', page))
    assert (record["turns"], record["ratings"], record["corrections"]) == ("3", "3", "3")
    assert record["voice_turns"] == "0" and record["conversations"] == "1"
    assert record["consent"].startswith("not given")
    missing = web.get("/people/show?platform=telegram&user=404")
    assert missing.status_code == 404 and "Nothing is stored about telegram:404" in missing.text
    assert "forgotten:" in missing.text  # the name the trail would know them by
    assert web.get("/people?q=nobody-like-this").text.count("No one stored matches") == 1


def test_a_hostile_name_is_shown_escaped(web: TestClient, iris: App) -> None:
    seed(iris, [("hi", "hello", "hey")])
    iris.store.set_consent(Person("telegram", "77", XSS), None)  # a display name someone chose
    sign_in(web)
    for page in (web.get("/people?q=77").text, web.get(ANN_PAGE).text):
        assert XSS not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_admin_sets_consent_and_it_is_audited_as_them(web: TestClient, iris: App) -> None:
    seed(iris)
    csrf = sign_in(web)
    response = web.post(
        "/people/consent", data={"platform": "telegram", "user": "77", "consent": "no", "csrf": csrf}
    )
    assert response.status_code == 303 and response.headers["location"] == ANN_PAGE
    assert consent_of(iris, "77") is False
    trail = [(e.actor, e.action, e.target, e.details) for e in iris.store.audit_entries()]
    assert ("web:admin", AuditAction.CONSENT, "telegram:77", {"consent": False}) in trail
    assert "no" in dict(re.findall(r'<dd data-field="([a-z_]+)">([^<]*)', web.get(ANN_PAGE).text))["consent"]
    refused = web.post(
        "/people/consent", data={"platform": "telegram", "user": "77", "consent": "maybe", "csrf": csrf}
    )
    assert refused.status_code == 400 and "Choose yes, no or unset." in refused.text


def test_consent_is_recorded_for_someone_not_stored_yet(web: TestClient, iris: App) -> None:
    csrf = sign_in(web)
    unknown = web.get("/people/show?platform=telegram&user=5")
    assert unknown.status_code == 404 and 'id="consent-form"' in unknown.text  # the form to record it
    response = web.post(
        "/people/consent", data={"platform": "telegram", "user": "5", "consent": "no", "csrf": csrf}
    )
    assert response.status_code == 303 and response.headers["location"].endswith("platform=telegram&user=5")
    assert consent_of(iris, "5") is False  # held from their first message on, as the CLI's does
    trail = [(e.actor, e.action, e.target, e.details) for e in iris.store.audit_entries()]
    assert trail == [("web:admin", AuditAction.CONSENT, "telegram:5", {"consent": False})]
    page = web.get("/people/show?platform=telegram&user=5")
    assert page.status_code == 200 and dict(re.findall(r'<dd data-field="([a-z_]+)">([^<]*)', page.text))[
        "consent"
    ].startswith("no")
    typo = web.post(
        "/people/consent", data={"platform": "telegarm", "user": "6", "consent": "no", "csrf": csrf}
    )
    assert typo.status_code == 400 and "no platform named &#39;telegarm&#39;" in typo.text
    assert rows(iris, PersonRow, PersonRow.user_id == "6") == 0
    assert 'id="consent-form"' not in web.get("/people/show?platform=telegarm&user=6").text


def test_forget_asks_first_then_deletes_what_the_chat_forget_deletes(web: TestClient, iris: App) -> None:
    seed(iris)  # Ann: 3 questions, 3 replies, 3 ratings, 3 corrections
    bob_questions = [(q.replace("?", ", Bob?"), r, b) for q, r, b in QUESTIONS]
    seed(iris, bob_questions, person=BOB)
    seed(iris, QUESTIONS[:1], person=CARL)
    csrf = sign_in(web)

    ask = web.get("/people/forget?platform=telegram&user=77")
    assert ask.status_code == 200 and 'id="forget-form"' in ask.text and "3 message(s)" in ask.text
    assert rows(iris, PersonRow, PersonRow.user_id == "77") == 1  # asking deleted nothing
    unconfirmed = web.post("/people/forget", data={"platform": "telegram", "user": "77", "csrf": csrf})
    assert unconfirmed.status_code == 400 and rows(iris, TurnRow) == 14

    done = web.post(
        "/people/forget", data={"platform": "telegram", "user": "77", "confirm": "yes", "csrf": csrf}
    )
    assert done.status_code == 200, done.text
    assert (
        "Deleted 6 turn(s) (their messages and the replies to them), 3 rating(s) and 3 suggested answer(s)"
        in done.text
    )
    asyncio.run(iris.service.privacy.forget(BOB))  # Bob's own /forget, as the chats run it

    for person in (ANN, BOB):
        assert rows(iris, PersonRow, PersonRow.user_id == person.user_id) == 0
    assert rows(iris, TurnRow) == 2 and rows(iris, ConversationRow) == 1  # Carl's question and reply
    assert rows(iris, RatingRow) == 1 and rows(iris, CorrectionRow) == 1
    trail = iris.store.audit_entries()
    forgets = {(e.actor, e.target): e.details for e in trail if e.action is AuditAction.FORGET}
    assert forgets[("web:admin", ANN.pseudonym)]["turns"] == 6
    assert forgets[(BOB.pseudonym, None)]["turns"] == 6  # the same deletion, by the person
    assert not [e for e in trail if "telegram:77" in (e.actor, e.target)]  # the trail no longer names Ann

    again = web.post(
        "/people/forget", data={"platform": "telegram", "user": "77", "confirm": "yes", "csrf": csrf}
    )
    assert again.status_code == 429 and "ran a moment ago" in again.text  # the chats' cooldown holds here too
    gone = web.get(ANN_PAGE)
    assert gone.status_code == 404 and ANN.pseudonym in gone.text
