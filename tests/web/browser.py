"""The browser tests' harness: a real ``iris web`` process and a headless Chromium driven by Selenium.

Offline by construction: Debian's ``chromium`` and ``chromium-driver`` (``make system-deps``) are
named by path, so Selenium Manager, which would look for (and download) a driver and a browser,
never runs; ``SE_OFFLINE`` says so again in case a later Selenium calls it anyway.

Chromium's fake microphone plays a WAV file (``--use-file-for-fake-audio-capture``), and its fake
permission prompt says yes (``--use-fake-ui-for-media-stream``), so a page's ``getUserMedia`` and
``MediaRecorder`` record a real voice note. Every wait is explicit (``WebDriverWait``) and generous:
two busy cores can take seconds to render a page.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.web.test_web_process import IRIS, environment, free_port

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1200, 800)  # fixed, so screenshots are alike from run to run (and small)
WAIT = 60.0  # seconds for anything a page does on a loaded machine
SCREENSHOTS = "IRIS_WEB_SCREENSHOTS"  # a folder: each browser test saves its page there as NAME.png
SHOT_HEIGHT = 1500  # pixels of a page kept in its screenshot (< 250 KB each)


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for needed in (CHROMIUM, CHROMEDRIVER):
        if not needed.exists():
            return f"{needed} is missing: `make system-deps` installs chromium and chromium-driver"
    return None


def fake_microphone_wav(voice_note: Path, out: Path) -> Path:
    """The voice note as the WAV Chromium's fake microphone plays: PCM, 48 kHz mono, and 3 s of
    silence after it. The file starts when a page opens the microphone and then loops: a recording
    shorter than the padded file hears the voice note once."""
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(voice_note), "-af", "apad=pad_dur=3",
         "-ac", "1", "-ar", "48000", "-c:a", "pcm_s16le", str(out)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return out


def chromium(microphone: Path, downloads: Path) -> WebDriver:
    """A headless Chromium with a fake microphone playing ``microphone``, its window WINDOW."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root on CI, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--lang=en-US",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",  # the spoken reply may play
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT)
    return driver


def wait(driver: WebDriver, seconds: float = WAIT) -> WebDriverWait[WebDriver]:
    """An explicit wait, polled every 0.2 s, for what a page shows once it is ready."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2)


def shoot(driver: WebDriver, name: str) -> None:
    """Save the page as ``$IRIS_WEB_SCREENSHOTS/NAME.png`` when that folder is asked for: the
    window's width, the page's height up to SHOT_HEIGHT (charts sit below the fold)."""
    folder = os.environ.get(SCREENSHOTS)
    if not folder:
        return
    width, height = driver.execute_script(
        "const page = document.documentElement; return [page.clientWidth, page.scrollHeight];"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, SHOT_HEIGHT), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


@dataclass(frozen=True)
class Console:
    """An ``iris web`` process listening at ``url``; its stderr goes to ``log``. ``env`` is its
    environment, for a command (``iris models …``) that must see the same settings and database."""

    url: str
    token: str
    log: Path
    env: dict[str, str]

    def sign_in_link(self) -> str:
        return f"{self.url}/?token={self.token}"


def sign_in(driver: WebDriver, console: Console) -> None:
    """Open the sign-in link, as an admin pastes it: the console lands on the Review page."""
    from selenium.webdriver.support import expected_conditions as shown

    driver.get(console.sign_in_link())
    wait(driver).until(shown.url_to_be(f"{console.url}/review"))  # the token left the address bar


@contextmanager
def iris_web(root: Path, served_gguf: Path, token: str, **env: str) -> Iterator[Console]:
    """``iris web`` on a free port with its data in ``root/data`` and ``env`` (IRIS_… variables).

    Stopped with SIGINT, as Ctrl+C stops it; whatever it wrote on stderr must hold no traceback.
    Its stderr goes to a file, not a pipe nobody reads (a full pipe would stall the server).
    """
    port = free_port()
    log = root / f"iris-web-{port}.log"
    variables = environment(root, served_gguf, IRIS_WEB_TOKEN=token, **env)
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [IRIS, "web", "--port", str(port)],
            env=variables,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        _wait_for_start(process, log, port)
        yield Console(f"http://127.0.0.1:{port}", token, log, variables)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    written = log.read_text()
    assert "Traceback" not in written, written


def _wait_for_start(process: subprocess.Popen[str], log: Path, port: int, seconds: float = 120) -> None:
    pattern = re.compile(rf"http://127\.0\.0\.1:{port}/")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pattern.search(log.read_text()):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)  # polling a file the server writes: there is nothing to wait on
    raise AssertionError(f"iris web did not start on port {port}: {log.read_text()[-3000:]}")
