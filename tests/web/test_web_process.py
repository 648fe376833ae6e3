"""``iris web`` as a person starts it: a real process on a free port, stopped with Ctrl+C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

IRIS = str(Path(sys.executable).with_name("iris"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(tmp_path: Path, served_gguf: Path, **extra: str) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE_URL"))
    }
    return {**clean, "IRIS_DATA_DIR": str(tmp_path / "data"), "IRIS_LLM_MODEL": str(served_gguf), **extra}


def start_web(port: int, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``iris web`` as a process on ``port``; its stderr is read by ``wait_for_line``."""
    return subprocess.Popen(
        [IRIS, "web", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def wait_for_line(process: subprocess.Popen[str], pattern: str, seconds: float = 60) -> re.Match[str]:
    assert process.stderr is not None
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"no {pattern!r} in {''.join(seen)!r}")


def test_iris_web_prints_a_sign_in_link_answers_and_stops_on_ctrl_c(tmp_path: Path, served_gguf: Path) -> None:
    port = free_port()
    process = start_web(port, tmp_path, environment(tmp_path, served_gguf))
    try:
        link = wait_for_line(process, rf"http://127\.0\.0\.1:{port}/\?token=([\w-]{{20,}})")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as browser:
            assert browser.get("/review").status_code == 303  # not signed in
            signed = browser.get(link.group(0).removeprefix(f"http://127.0.0.1:{port}"))
            assert signed.status_code == 303 and signed.headers["location"] == "/review"
            assert browser.get("/review").status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) in (0, 130)
        with socket.socket() as probe:  # the port is free again
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    rest = process.stderr.read()
    assert "Traceback" not in rest, rest


def test_with_a_token_set_the_link_is_printed_without_it(tmp_path: Path, served_gguf: Path) -> None:
    port = free_port()
    process = start_web(
        port, tmp_path, environment(tmp_path, served_gguf, IRIS_WEB_TOKEN="from-the-environment")
    )
    try:
        line = wait_for_line(process, rf"http://127\.0\.0\.1:{port}/")
        assert "from-the-environment" not in line.string
        response = httpx.get(f"http://127.0.0.1:{port}/?token=from-the-environment", follow_redirects=False)
        assert response.status_code == 303 and "iris_session=" in response.headers["set-cookie"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def test_a_port_in_use_gets_one_line_and_no_traceback(tmp_path: Path, served_gguf: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [IRIS, "web", "--port", str(port)],
            env=environment(tmp_path, served_gguf),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert f"the web console cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_iris_web_cleanly(tmp_path: Path, served_gguf: Path) -> None:
    """systemd's and docker's stop: connections closed, exit 0, no traceback, the port free again."""
    port = free_port()
    process = start_web(port, tmp_path, environment(tmp_path, served_gguf))
    try:
        link = wait_for_line(process, rf"http://127\.0\.0\.1:{port}/\?token=([\w-]{{20,}})")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False) as browser:
            browser.get(f"/?token={link.group(1)}")
            assert browser.get("/review").status_code == 200  # a kept-alive connection is open
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    rest = process.stderr.read()
    assert "Traceback" not in rest, rest
