"""The Watch page in a real browser: the A/B test's figures are those of ``iris models ab status --json``,
and they follow new ratings while the page is open."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown

from bots.app import App
from core.experiments import ABConfig, Arm, Experiment
from storage.experiments import SqlExperiments
from storage.repository import SqlStore
from tests.test_ab_fairness import crowd, replies
from tests.web.browser import Console, shoot, sign_in, wait
from tests.web.test_web_process import IRIS

# What the page shows, as the cells' data-value attributes hold it (watch.html; watch.js updates them).
SHOWN = """
const figures = {arms: {}, comparison: {}};
for (const row of document.querySelectorAll("#ab-arms tr[data-arm]")) {
  figures.arms[row.dataset.arm] = Object.fromEntries(
    Array.from(row.querySelectorAll("[data-field]"), (c) => [c.dataset.field, JSON.parse(c.dataset.value)]));
}
for (const cell of document.querySelectorAll("#ab-comparison [data-field]")) {
  figures.comparison[cell.dataset.field] = JSON.parse(cell.dataset.value);
}
return figures;
"""


def rate(store: SqlStore, experiment: Experiment, arm: Arm, values: list[int], first: int) -> None:
    """Each rating from another person, on a reply in a conversation of its own."""
    for person, value in zip(crowd(len(values), start=first), values, strict=True):
        (turn,) = replies(store, experiment, arm, 1, f"{arm.value}-{person.user_id}")
        store.rate(person, turn, value)


def ab_status(console: Console) -> dict[str, object]:
    """``iris models ab status --json`` as an admin runs it, with the console's settings."""
    done = subprocess.run(
        [IRIS, "models", "ab", "status", "--json"], env=console.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


def expected(status: dict[str, object], fields: list[str]) -> dict[str, object]:
    """The CLI's figures in the page's shape."""
    arms = status["arms"]
    comparison = status["comparison"]
    assert isinstance(arms, dict) and isinstance(comparison, dict)
    return {
        "arms": {arm: {field: arms[arm][field] for field in fields} for arm in ("control", "candidate")},
        "comparison": {**comparison, "reached": status["reached"], "decision": status["decision"]},
    }


def test_the_watch_page_shows_the_ab_test_as_ab_status_does_and_follows_new_ratings(
    console: Console, browser: WebDriver, iris: App, served_gguf: Path
) -> None:
    store = iris.store
    store.register_model("candidate-v2", str(served_gguf))
    experiment = SqlExperiments(store.engine, ABConfig()).start_experiment("candidate-v2", 0.5, 50, 0.1, "test")
    rate(store, experiment, Arm.CONTROL, [1, 1, -1, 1, -1, -1, 1], first=0)
    rate(store, experiment, Arm.CANDIDATE, [1, 1, 1, -1, 1, 1], first=100)

    sign_in(browser, console)
    browser.get(f"{console.url}/watch")
    wait(browser).until(shown.visibility_of_element_located((By.ID, "ab-arms")))
    fields = browser.execute_script(
        "return Array.from(document.querySelectorAll('#ab-arms tr[data-arm=control] [data-field]'),"
        " (c) => c.dataset.field)"
    )
    assert {"ratings", "raters", "up_share", "interval"} <= set(fields)
    assert browser.execute_script(SHOWN) == expected(ab_status(console), fields)
    candidate = browser.find_element(By.CSS_SELECTOR, "#ab-arms tr[data-arm=candidate]")
    assert "candidate-v2" in candidate.text and "83.3 %" in candidate.text  # 5 of 6, as people read it
    wait(browser).until(shown.text_to_be_present_in_element((By.ID, "watch-refreshed"), "Updated"))
    shoot(browser, "watch")

    rate(store, experiment, Arm.CANDIDATE, [-1, -1], first=200)  # while the page is open
    ratings = "#ab-arms tr[data-arm=candidate] [data-field=ratings]"
    wait(browser).until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, ratings), "8"))
    assert browser.execute_script(SHOWN) == expected(ab_status(console), fields)
