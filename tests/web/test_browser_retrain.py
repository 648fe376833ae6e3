"""The Retrain page in a real browser: start a real ``cpu-tiny`` retrain and follow it, as the page
polls it, through its stages and loss to the gate's verdict.

The run is ``iris retrain`` in its own process, started by ``iris web``, with the retrain tests'
tiny settings (a few steps on short sequences) on their seeded deployment (six people taught one
fact; an admin approved it): the loop is under test here, not what four steps teach.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown

from tests.finetune import test_retrain as retrain_tests
from tests.web.browser import iris_web, shoot, sign_in, wait
from tests.web.conftest import TOKEN

seeded = retrain_tests.seeded
base_cache = retrain_tests.base_cache

RUN = 900.0  # seconds a whole tiny run may take on two busy cores (usually a few minutes)
ENDED = ("promoted", "refused")
STATUS = 'const run = document.getElementById("retrain-run"); return run ? run.dataset.status : "";'


def test_a_cpu_tiny_retrain_started_in_the_browser_is_followed_to_the_gates_verdict(
    browser: WebDriver, seeded: retrain_tests.Seeded, base_cache: Path, tmp_path: Path, served_gguf: Path
) -> None:
    shutil.copytree(seeded.data_dir, tmp_path / "data")
    tiny = {**retrain_tests.TINY, "IRIS_RETRAIN_BASE_CACHE": str(base_cache)}
    with iris_web(tmp_path, served_gguf, TOKEN, **tiny) as console:
        sign_in(browser, console)
        browser.get(f"{console.url}/retrain")
        profile = wait(browser).until(shown.visibility_of_element_located((By.ID, "retrain-profile")))
        assert profile.get_attribute("value") == "cpu-tiny"
        browser.find_element(By.ID, "retrain-start-button").click()

        def status(page: WebDriver) -> str:
            """The run card's status, read in one go: htmx replaces the card every 2 s."""
            return str(page.execute_script(STATUS))

        wait(browser).until(lambda page: status(page) not in ("", "none"))
        assert browser.find_element(By.ID, "retrain-start-button").get_attribute("disabled")  # one at a time
        # Followed as it goes: a stage running, then the loss drawn (the page polls every 2 s).
        wait(browser, RUN).until(lambda page: page.find_elements(By.CSS_SELECTOR, "#retrain-stages li.running"))
        wait(browser, RUN).until(
            lambda page: page.find_elements(By.CSS_SELECTOR, "#retrain-loss polyline") or status(page) in ENDED
        )
        wait(browser, RUN).until(lambda page: status(page) in ENDED)

        verdict = wait(browser).until(shown.visibility_of_element_located((By.ID, "retrain-verdict")))
        assert verdict.text.startswith("The gate: ")
        assert "General-knowledge probe" in verdict.text
        assert browser.find_elements(By.CSS_SELECTOR, "#retrain-facts tbody tr")  # each taught fact
        assert browser.find_elements(By.CSS_SELECTOR, "#retrain-loss polyline")
        stages = browser.find_elements(By.CSS_SELECTOR, "#retrain-stages li")
        assert stages and all(stage.get_attribute("class") == "done" for stage in stages)
        shoot(browser, "retrain")
        names = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#retrain-models tbody tr")]
        assert any("cpu-tiny-" in name for name in names), names  # registered, promoted or not
