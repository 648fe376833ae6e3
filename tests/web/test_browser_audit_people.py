"""The People and Audit pages in a real browser: find a person, record their consent, /forget
them on their behalf, and find both actions in the audit trail under the admin's name."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.ui import Select

from bots.app import App
from tests.web.browser import Console, shoot, sign_in, wait
from tests.web.conftest import ANN


def test_an_admin_finds_a_person_records_consent_forgets_them_and_sees_it_audited(
    console: Console, browser: WebDriver, iris: App, corrections: list[int]
) -> None:
    sign_in(browser, console)
    browser.get(f"{console.url}/people")
    search = browser.find_element(By.CSS_SELECTOR, "#people-search input[name=q]")
    search.send_keys(ANN.actor)  # "telegram:77" opens her record
    search.submit()
    record = wait(browser).until(shown.visibility_of_element_located((By.ID, "person-record")))
    assert browser.find_element(By.ID, "person").get_attribute("data-person") == ANN.actor
    assert "Ann" in browser.find_element(By.ID, "person").text
    assert str(len(corrections)) in record.text  # her suggested answers are counted

    Select(browser.find_element(By.CSS_SELECTOR, "#consent-form select[name=consent]")).select_by_value("no")
    browser.find_element(By.CSS_SELECTOR, "#consent-form button[type=submit]").click()
    wait(browser).until(shown.visibility_of_element_located((By.ID, "person-record")))
    selected = Select(browser.find_element(By.CSS_SELECTOR, "#consent-form select[name=consent]"))
    assert selected.first_selected_option.get_attribute("value") == "no"  # read back from the database
    shoot(browser, "people")

    browser.find_element(By.ID, "forget-link").click()
    wait(browser).until(shown.visibility_of_element_located((By.ID, "forget-ask")))
    assert iris.store.correction(corrections[0]) is not None  # the question alone deletes nothing
    browser.find_element(By.CSS_SELECTOR, "#forget-form button[type=submit]").click()
    wait(browser).until(shown.visibility_of_element_located((By.ID, "forget-done")))
    assert all(iris.store.correction(correction) is None for correction in corrections)
    assert iris.store.stats().user_turns == 0

    browser.get(f"{console.url}/audit")
    rows = wait(browser).until(
        shown.visibility_of_all_elements_located((By.CSS_SELECTOR, "#audit-entries tr[data-audit-id]"))
    )
    seen = [
        (
            row.find_element(By.CSS_SELECTOR, "td[data-field=actor]").text,
            row.find_element(By.CSS_SELECTOR, "td[data-field=action]").text,
        )
        for row in rows
    ]
    assert seen[0][0] == "web:admin" and "forget" in seen[0][1], seen  # newest first
    assert any(actor == "web:admin" and "consent" in action for actor, action in seen), seen
    assert not any(
        ANN.user_id == row.find_element(By.CSS_SELECTOR, "td[data-field=target]").text for row in rows
    )
    shoot(browser, "audit")
