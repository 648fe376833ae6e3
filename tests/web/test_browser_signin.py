"""In a real browser, without signing in: every page shows the sign-in, every action is refused.

The pages and actions are read from the console's own routes, so a page added later is covered
without touching this test.
"""

from __future__ import annotations

import re

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown
from starlette.routing import Route
from starlette.testclient import TestClient

from bots.app import App
from tests.web.browser import WAIT, Console, shoot, wait

PUBLIC = {"/", "/signin"}

# POST each action from the page, as a script on it could, with a made-up CSRF token.
POST_EACH = """
const [paths, done] = arguments;
const form = () => new URLSearchParams({action: "approve", text: "forged", csrf: "forged", rating: "up"});
Promise.all(paths.map((path) => fetch(path, {method: "POST", body: form(), redirect: "manual"})
  .then((response) => [path, response.status])))
  .then((pairs) => done(Object.fromEntries(pairs)), (error) => done(String(error)));
"""


def guarded(web: TestClient) -> tuple[list[str], list[str]]:
    """The console's pages (GET) and actions (POST) behind the sign-in, with 1 for each path parameter."""
    pages: list[str] = []
    actions: list[str] = []
    for route in web.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, Route) or route.path in PUBLIC:
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        (actions if "POST" in (route.methods or ()) else pages).append(path)
    return pages, actions


def test_without_a_sign_in_every_page_shows_the_sign_in_and_every_action_gets_403(
    web: TestClient, console: Console, browser: WebDriver, iris: App, corrections: list[int]
) -> None:
    pages, actions = guarded(web)
    assert "/review" in pages and "/review/1" in actions, (pages, actions)
    for path in pages:
        browser.get(console.url + path)
        wait(browser).until(shown.url_to_be(f"{console.url}/signin"))
        assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in", path
    shoot(browser, "signin")

    browser.set_script_timeout(WAIT)
    statuses = browser.execute_async_script(POST_EACH, actions)
    assert statuses == dict.fromkeys(actions, 403)
    stored = [iris.store.correction(c) for c in corrections]
    assert [c.status.value if c else None for c in stored] == ["pending"] * len(corrections)

    browser.get(f"{console.url}/?token=not-the-token")
    alert = wait(browser).until(shown.visibility_of_element_located((By.CSS_SELECTOR, "[role=alert]")))
    assert alert.text == "That sign-in token is not valid."
    browser.get(f"{console.url}/review")
    wait(browser).until(shown.url_to_be(f"{console.url}/signin"))  # a wrong token opened no session
