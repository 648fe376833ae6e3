"""The Review page in a real browser: sign in with the link, edit a correction in place, approve
it with its key, and find the decision stored and audited."""

from __future__ import annotations

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown

from bots.app import App
from tests.web.browser import Console, shoot, sign_in, wait

EDITED = "Hamlet was written by William Shakespeare, around 1600."


def press(browser: WebDriver, *keys: str) -> None:
    """Keys typed on the page, to whatever has the focus (as a person types)."""
    ActionChains(browser).send_keys(*keys).perform()


def test_an_admin_signs_in_edits_a_correction_in_place_and_approves_it_with_a_key(
    console: Console, browser: WebDriver, iris: App, corrections: list[int]
) -> None:
    first, second = corrections[0], corrections[1]
    sign_in(browser, console)
    card = wait(browser).until(shown.visibility_of_element_located((By.ID, f"correction-{first}")))
    wait(browser).until(lambda _: "current" in (card.get_attribute("class") or ""))  # the keys act on this one
    assert "Who wrote Hamlet?" in card.text  # what was asked
    assert "Charles Dickens." in card.text  # what Iris replied
    assert "model m1" in card.text and "👎 1" in card.text
    box = card.find_element(By.TAG_NAME, "textarea")
    assert box.get_attribute("value") == "William Shakespeare wrote Hamlet."

    press(browser, "e")  # edit: the proposal's box takes the focus
    assert browser.switch_to.active_element == box
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(EDITED)
    press(browser, Keys.ESCAPE, "a")  # leave the box, approve

    decided = f"#correction-{first} .message"
    wait(browser).until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, decided), "Approved"))
    assert browser.find_element(By.CSS_SELECTOR, decided).text == "Approved by web:admin (edited)."
    assert not browser.find_elements(By.CSS_SELECTOR, f"#correction-{first} textarea")  # decided: no box
    following = browser.find_element(By.ID, f"correction-{second}")
    wait(browser).until(lambda _: "current" in (following.get_attribute("class") or ""))  # on to the next card
    shoot(browser, "review")

    stored = iris.store.correction(first)
    assert stored is not None and stored.status.value == "approved"
    assert stored.text == EDITED and stored.reviewer == "web:admin"
    trail = [(entry.actor, entry.action.value, entry.target) for entry in iris.store.audit_entries()]
    assert ("web:admin", "review.edit", f"correction:{first}") in trail, trail
    assert iris.store.correction(second).status.value == "pending"  # type: ignore[union-attr]
