"""The Watch page as an admin reads it, on SQLite and PostgreSQL: the A/B arms' figures are the ones
``iris models ab status --json`` prints, the charts' series count what is stored, and an empty
database gets sentences, not errors."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from starlette.testclient import TestClient
from typer.testing import CliRunner

from bots.app import App
from bots.cli import app as cli_app
from bots.web.pages import STATIC
from core.ab import start
from core.domain import ChatRef, Person, Timings
from core.experiments import Arm
from storage.experiments import SqlExperiments
from tests.web.conftest import sign_in

HOSTILE_MODEL = "cand<script>alert(1)</script>"


def say(iris: App, person: Person, text: str, *, voice: bool = False, language: str | None = None) -> int:
    """``person`` says ``text`` in their own chat and Iris (``m1``) answers; the reply's id."""
    receipt = iris.store.record_user_turn(
        ChatRef("telegram", person.user_id),
        person,
        text=text,
        from_voice=voice,
        message_id=None,
        shared_history=False,
    )
    if language:
        iris.store.set_turn_language(receipt.turn_id, language, 0.99)
    return iris.store.record_reply(receipt.conversation_id, receipt.turn_id, "hi", "m1", Timings())


def test_an_empty_database_gets_sentences_not_errors(web: TestClient) -> None:
    sign_in(web)
    page = web.get("/watch")
    assert page.status_code == 200
    assert 'id="ab-none"' in page.text and "No A/B test has run yet" in page.text
    assert "No replies in these days." in page.text and "Traceback" not in page.text
    data = web.get("/watch.json").json()
    assert data["ab"] is None and data["ratings"]["series"] == [] and sum(data["hours"]) == 0


def test_the_charts_count_what_is_stored(web: TestClient, iris: App) -> None:
    people = [Person("telegram", str(n), f"P{n}") for n in range(3)]
    for n, person in enumerate(people):
        reply = say(iris, person, "hello", voice=n == 0, language="de" if n == 2 else "en")
        iris.store.rate(person, reply, 1 if n else -1)
    sign_in(web)
    data = web.get("/watch.json?days=7").json()
    (series,) = data["ratings"]["series"]
    assert series["model"] == "m1" and series["up_share"] == [0.6667] and series["rated"] == [3]
    assert data["turns"]["voice"] == [1] and data["turns"]["text"] == [2]
    assert {row["language"]: row["turns"] for row in data["languages"]} == {"en": 2, "de": 1}
    assert sum(data["hours"]) == 3
    page = web.get("/watch?days=7")
    assert page.status_code == 200 and 'id="chart-ratings"' in page.text
    assert re.search(r'id="ratings-empty"[^>]*hidden', page.text)  # there is data: the sentence is hidden


def run_ab(iris: App) -> None:
    """An A/B test with two arms of rated replies, from several people and conversations."""
    store = iris.store
    store.register_model(HOSTILE_MODEL, "/nowhere.gguf")
    experiments = SqlExperiments(store.engine, iris.settings.ab)
    experiment = start(experiments, store, HOSTILE_MODEL, share=0.5, min_ratings=50, margin=0.1, actor="test")
    for arm, votes in ((Arm.CONTROL, [1, 1, -1, 1, -1]), (Arm.CANDIDATE, [1, 1, 1, -1, 1, 1])):
        for n, vote in enumerate(votes):
            person = Person("telegram", f"{arm.value}-{n}", f"{arm.value} {n}")
            receipt = store.record_user_turn(
                ChatRef("telegram", f"{arm.value}-{n}"),
                person,
                text="hi",
                from_voice=False,
                message_id=None,
                shared_history=False,
            )
            reply = store.record_reply(
                receipt.conversation_id, receipt.turn_id, "hello", arm.value, Timings(), (experiment.id, arm)
            )
            store.rate(person, reply, vote)


def cells(page: str, scope: str) -> dict[str, object]:
    """``data-field`` → ``data-value`` (JSON) of the cells inside the element that ``scope`` opens."""
    found = re.search(re.escape(scope) + r".*?</(tr|dl)>", page, re.S)
    assert found, scope
    pairs = re.findall(r"data-field=\"([a-z_]+)\" data-value='([^']*)'", found.group(0))
    return {field: json.loads(html.unescape(value)) for field, value in pairs}


def test_the_ab_figures_on_the_page_are_ab_status_json(
    web: TestClient, iris: App, database_url: str, tmp_path: Path
) -> None:
    run_ab(iris)
    env = {"DATABASE_URL": database_url, "IRIS_DATA_DIR": str(iris.settings.data_dir)}
    shown = CliRunner().invoke(cli_app, ["models", "ab", "status", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    sign_in(web)
    page = web.get("/watch").text
    for arm in ("control", "candidate"):
        on_page = cells(page, f'<tr data-arm="{arm}">')
        assert on_page == {field: status["arms"][arm][field] for field in on_page}, arm
        assert len(on_page) == 10
    comparison = cells(page, '<dl id="ab-comparison"')
    assert comparison["difference"] == status["comparison"]["difference"]
    assert comparison["newcombe"] == status["comparison"]["newcombe"]
    assert comparison["bootstrap"] == status["comparison"]["bootstrap"]
    assert (comparison["reached"], comparison["decision"]) == (status["reached"], status["decision"])
    assert web.get("/watch.json").json()["ab"] == status  # what the page refreshes from, too
    # The candidate's name is someone's text: escaped in the page, never markup.
    assert HOSTILE_MODEL not in page and "cand&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_watch_is_refused_without_a_session(web: TestClient) -> None:
    for path in ("/watch", "/watch.json", "/watch?days=7"):
        response = web.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/signin", path


def test_a_bad_window_gets_a_sentence(web: TestClient) -> None:
    sign_in(web)
    for days in ("0", "abc", "100000"):
        page = web.get(f"/watch?days={days}")
        assert page.status_code == 400 and "Choose a number of days" in page.text
        assert web.get(f"/watch.json?days={days}").status_code == 400


def test_the_page_runs_no_inline_script_and_ships_chart_js_with_its_licence(web: TestClient) -> None:
    sign_in(web)
    page = web.get("/watch").text
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and all('src="/static/' in tag for tag in scripts)
    assert '<script src="/static/chart.umd.min.js" defer>' in page
    assert "style=" not in page and "<style" not in page  # style-src 'self': no inline styles either
    assert web.get("/static/chart.umd.min.js").status_code == 200
    assert web.get("/static/watch.js").status_code == 200
    assert "MIT License" in (STATIC / "chart.js.LICENSE").read_text()
