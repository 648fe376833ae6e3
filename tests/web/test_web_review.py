"""The Review page as an admin uses it: the queue, its filters and pages, and one request per decision."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from starlette.testclient import TestClient

from bots.app import App, database_url
from bots.web.server import create_app
from finetune.feedback import export_feedback
from storage.review_queue import SqlReviewQueue
from tests.web.conftest import TOKEN, seed, sign_in

HTMX = {"HX-Request": "true"}


def sft_answers(iris: App, out: Path) -> list[str]:
    export_feedback(database_url(iris.settings), out)
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    return [turn["value"] for row in rows for turn in row["conversations"] if turn["from"] == "gpt"]


def card(html: str, correction_id: int) -> str:
    found = re.search(rf'<article class="card [^"]*" id="correction-{correction_id}".*?</article>', html, re.S)
    assert found, f"no card for correction {correction_id}"
    return found.group(0)


def test_the_queue_shows_each_correction_with_its_conversation(web: TestClient, corrections: list[int]) -> None:
    sign_in(web)
    page = web.get("/review")
    assert page.status_code == 200
    first = card(page.text, corrections[0])
    assert "Who wrote Hamlet?" in first  # what was asked
    assert "Charles Dickens." in first  # what Iris said
    assert "William Shakespeare wrote Hamlet." in first  # the proposal, editable
    assert "<textarea" in first and "👎 1" in first and "<code>m1</code>" in first
    assert "pending (3)" in page.text


def test_an_admin_edits_and_approves_and_the_export_holds_the_edit(
    web: TestClient, iris: App, corrections: list[int], tmp_path: Path
) -> None:
    csrf = sign_in(web)
    first = corrections[0]
    response = web.post(
        f"/review/{first}",
        data={"action": "approve", "text": "Hamlet was written by William Shakespeare."},
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert response.status_code == 200
    assert "Approved by web:admin (edited)." in response.text
    assert "<textarea" not in response.text  # decided: no more buttons
    stored = iris.store.correction(first)
    assert stored is not None and stored.status.value == "approved" and stored.reviewer == "web:admin"
    assert "Hamlet was written by William Shakespeare." in sft_answers(iris, tmp_path / "export")
    trail = [(e.actor, e.action.value, e.target) for e in iris.store.audit_entries()]
    assert ("web:admin", "review.edit", f"correction:{first}") in trail, trail


def test_a_form_without_htmx_approves_as_proposed_and_comes_back_to_the_queue(
    web: TestClient, iris: App, corrections: list[int]
) -> None:
    csrf = sign_in(web)
    second = corrections[1]
    response = web.post(
        f"/review/{second}", data={"action": "approve", "text": "6 times 7 is 42.", "csrf": csrf}
    )
    assert response.status_code == 303 and response.headers["location"] == "/review?status=pending"
    trail = [(e.actor, e.action.value) for e in iris.store.audit_entries()]
    assert ("web:admin", "review.approve") in trail  # unchanged text: an approval, not an edit
    assert f'id="correction-{second}"' not in web.get("/review").text  # no longer pending


def test_a_rejected_correction_stays_out_of_the_training_data(
    web: TestClient, iris: App, corrections: list[int], tmp_path: Path
) -> None:
    csrf = sign_in(web)
    third = corrections[2]
    response = web.post(f"/review/{third}", data={"action": "reject", "csrf": csrf}, headers=HTMX)
    assert response.status_code == 200 and "Rejected by web:admin." in response.text
    assert "Banana." not in sft_answers(iris, tmp_path / "export")
    assert ("web:admin", "review.reject") in [(e.actor, e.action.value) for e in iris.store.audit_entries()]
    rejected = web.get("/review?status=rejected")
    assert f'id="correction-{third}"' in rejected.text and "rejected by web:admin" in rejected.text


def test_a_decision_on_a_decided_correction_gets_a_clear_answer_and_changes_nothing(
    web: TestClient, iris: App, corrections: list[int]
) -> None:
    csrf = sign_in(web)
    first = corrections[0]
    iris.store.review_correction(first, False, "telegram:99")  # another admin, in a chat, first
    response = web.post(
        f"/review/{first}", data={"action": "approve", "text": "Other.", "csrf": csrf}, headers=HTMX
    )
    assert response.status_code == 409
    assert f"Correction #{first} was already reviewed (rejected by telegram:99)" in response.text
    stored = iris.store.correction(first)
    assert stored is not None and stored.status.value == "rejected" and stored.text != "Other."
    plain = web.post(f"/review/{first}", data={"action": "reject", "csrf": csrf})
    assert plain.status_code == 409 and "already reviewed" in plain.text and "Traceback" not in plain.text


def test_bad_requests_get_a_clear_answer_and_store_nothing(
    web: TestClient, iris: App, corrections: list[int]
) -> None:
    csrf = sign_in(web)
    first = corrections[0]
    cases = [
        ({"action": "approve", "text": "   "}, 400, "The corrected answer is empty"),
        ({"action": "delete"}, 400, "Choose approve or reject"),
        ({"action": "approve", "text": "x" * 4001}, 400, "over 4000 characters"),
        ({"action": "approve", "status": "bogus"}, 400, "Unknown status"),
    ]
    for data, code, says in cases:
        response = web.post(f"/review/{first}", data={**data, "csrf": csrf}, headers=HTMX)
        assert response.status_code == code and says in response.text, (data, response.text)
    gone = web.post("/review/999999", data={"action": "approve", "csrf": csrf}, headers=HTMX)
    assert gone.status_code == 404 and "There is no correction #999999" in gone.text
    assert web.get("/review?status=bogus").status_code == 400
    assert web.get("/review?after=abc").status_code == 400
    assert all(c.status.value == "pending" for c in iris.store.corrections())


def test_hostile_text_is_shown_as_text(web: TestClient, iris: App) -> None:
    hostile = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    [correction] = seed(iris, [("<b>bold question</b>", "</textarea><script>x()</script>", hostile + "\u202e")])
    sign_in(web)
    html = card(web.get("/review").text, correction)
    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
    assert "&lt;/textarea&gt;&lt;script&gt;x()&lt;/script&gt;" in html
    assert "1 hidden character(s)" in html  # the bidi override is flagged


def test_filters_by_model_version_and_status(web: TestClient, iris: App, corrections: list[int]) -> None:
    [other] = seed(iris, [("Capital of Peru?", "Quito.", "Lima.")], model="m2-retrained")
    sign_in(web)
    page = web.get("/review")
    assert '<option value="m2-retrained"' in page.text
    only_m2 = web.get("/review?model=m2-retrained").text
    assert f'id="correction-{other}"' in only_m2
    assert all(f'id="correction-{c}"' not in only_m2 for c in corrections)
    assert web.get("/review?status=approved").text.count('<article class="card') == 0
    assert web.get("/review?status=all").text.count('<article class="card') == 4


def test_the_queue_is_paged(iris: App, corrections: list[int]) -> None:
    config = replace(iris.settings.web, page_size=2)
    app = create_app(iris.service, SqlReviewQueue(iris.store.engine), config, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        sign_in(client)
        first = client.get("/review").text
        assert first.count('<article class="card') == 2
        following = re.search(r'href="(/review\?[^"]+)" rel="next"', first)
        assert following, first
        second = client.get(following.group(1).replace("&amp;", "&")).text
        assert second.count('<article class="card') == 1 and f'id="correction-{corrections[2]}"' in second
        assert 'rel="next"' not in second


def test_the_admin_name_setting_names_the_reviewer(iris: App, corrections: list[int]) -> None:
    config = replace(iris.settings.web, admin_name="ann")
    app = create_app(iris.service, SqlReviewQueue(iris.store.engine), config, TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        csrf = sign_in(client)
        response = client.post(
            f"/review/{corrections[0]}", data={"action": "reject", "csrf": csrf}, headers=HTMX
        )
        assert "Rejected by web:ann." in response.text
    assert ("web:ann", "review.reject") in [(e.actor, e.action.value) for e in iris.store.audit_entries()]
