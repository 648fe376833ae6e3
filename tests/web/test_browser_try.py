"""The Try it page in a real browser: a voice note recorded through Chromium's fake microphone
(MediaRecorder, as a person records one) is transcribed by whisper and answered by llama.cpp,
spoken back, and stored as the chats' turns are."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown

from bots.app import App
from core.domain import ChatRef, Role
from tests.web.browser import Console, iris_web, shoot, sign_in, wait
from tests.web.conftest import TOKEN

SPEAKING = 4.0  # seconds the admin holds the microphone: the 2.2 s greeting and a pause after it

# The spoken reply as the page's player sees it: loaded, and longer than nothing.
PLAYABLE = """
const audio = document.getElementById("try-audio");
return !audio.hidden && audio.readyState >= 1 && audio.duration > 0.3;
"""


@pytest.fixture
def talking_console(iris: App, tmp_path: Path, served_gguf: Path, database_url: str) -> Iterator[Console]:
    """``iris web`` with short replies at temperature 0, so an answer takes a few seconds here."""
    env = {"DATABASE_URL": database_url, "IRIS_MEMORY_ENABLED": "false"}
    env |= {"IRIS_GENERATION_MAX_TOKENS": "32", "IRIS_GENERATION_TEMPERATURE": "0"}
    with iris_web(tmp_path, served_gguf, TOKEN, **env) as running:
        yield running


def test_a_voice_note_from_the_microphone_is_transcribed_answered_and_spoken(
    talking_console: Console, browser: WebDriver, iris: App
) -> None:
    console = talking_console
    sign_in(browser, console)
    browser.get(f"{console.url}/try")
    record = wait(browser).until(shown.element_to_be_clickable((By.ID, "try-record")))
    record.click()
    wait(browser).until(shown.text_to_be_present_in_element((By.ID, "try-status"), "Recording"))
    # The length of the voice note (what the fake microphone says), not a wait for the machine.
    speaking_until = time.monotonic() + SPEAKING
    wait(browser).until(lambda _: time.monotonic() >= speaking_until)
    browser.find_element(By.ID, "try-stop").click()

    heard = wait(browser).until(shown.visibility_of_element_located((By.ID, "try-transcript")))
    wait(browser).until(lambda _: heard.text.strip())
    assert "morning" in heard.text.lower(), heard.text  # "Good morning, how are you today?"
    assert heard.text.lower().count("morning") == 1, heard.text  # heard once: one recording, one note
    wait(browser).until(shown.text_to_be_present_in_element((By.ID, "try-meta"), "reply #"))
    reply_text = browser.find_element(By.ID, "try-reply").text
    assert reply_text.strip()
    wait(browser).until(lambda page: page.execute_script(PLAYABLE))  # the spoken reply plays
    assert "error" not in (browser.find_element(By.ID, "try-status").get_attribute("class") or "")
    shoot(browser, "try")

    found = re.search(r"reply #(\d+)", browser.find_element(By.ID, "try-meta").text)
    assert found
    reply = iris.store.get_turn(int(found.group(1)))
    assert reply is not None and reply.role is Role.ASSISTANT and reply.chat == ChatRef("web", "admin")
    assert (reply.text or "").strip() == reply_text.strip() and reply.reply_to_id is not None
    asked = iris.store.get_turn(reply.reply_to_id)
    assert asked is not None and asked.from_voice and asked.text == heard.text
