"""``iris run telegram`` with ``IRIS_WEB_PORT``: the console in the same process, and Ctrl+C stops both."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx

from tests.telegram.conftest import fake_api  # noqa: F401  (the fixture, for this module)
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.test_iris_run import iris_environment
from tests.web.test_web_process import free_port


async def test_iris_run_serves_the_console_beside_the_bot_and_stops_on_ctrl_c(
    fake_api: FakeBotApi,  # noqa: F811
    tmp_path: Path,
    served_gguf: Path,
) -> None:
    port = free_port()
    env = {**iris_environment(fake_api, tmp_path / "data", served_gguf), "IRIS_WEB_PORT": str(port)}
    env["IRIS_WEB_TOKEN"] = "run-token"
    log_path = tmp_path / "iris.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("iris")),
            "run",
            "telegram",
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
    try:
        await fake_api.wait_for(lambda: fake_api.calls_to("getUpdates"), timeout=180)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as browser:
            for _ in range(100):
                try:
                    signed = await browser.get("/?token=run-token")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert signed.status_code == 303, log_path.read_text()
            assert (await browser.get("/review")).status_code == 200
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log_path.read_text()
    assert process.returncode in (0, 130), text
    assert "Traceback" not in text, text
    assert "run-token" not in text
