"""The real ``iris run telegram`` command against the fake Bot API: voice note in, reply out, 👍 stored."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from tests.conftest import voice
from tests.telegram.fake_bot_api import TOKEN, FakeBotApi, private_chat, user
from tests.telegram.scenario import button, turn_of, wait_for_reply

ADA = user(42, "Ada")


def iris_environment(fake_api: FakeBotApi, data_dir: Path, served_gguf: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "TELEGRAM_", "DISCORD_"))}
    return {
        **inherited,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_BASE_URL": fake_api.base_url,
        "TELEGRAM_BASE_FILE_URL": fake_api.base_file_url,
        "TELEGRAM_EDIT_INTERVAL_SECONDS": "0.2",
        "IRIS_DATA_DIR": str(data_dir),
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_GENERATION_TEMPERATURE": "0",
        "IRIS_GENERATION_MAX_TOKENS": "32",
        "IRIS_LOG_LEVEL": "INFO",
    }


async def test_iris_run_telegram_answers_a_voice_note_and_stores_a_thumbs_up(
    fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    data_dir, log_path = tmp_path / "data", tmp_path / "iris.log"
    iris = Path(sys.executable).with_name("iris")
    with log_path.open("wb") as log:
        # cwd is the temporary directory, so no .env of the checkout is read.
        process = await asyncio.create_subprocess_exec(
            str(iris),
            "run",
            "telegram",
            env=iris_environment(fake_api, data_dir, served_gguf),
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
    try:
        polling = asyncio.ensure_future(fake_api.wait_for(lambda: fake_api.calls_to("getUpdates"), timeout=180))
        exited = asyncio.ensure_future(process.wait())
        await asyncio.wait([polling, exited], return_when=asyncio.FIRST_COMPLETED)
        assert not exited.done(), f"iris exited early:\n{log_path.read_text()}"
        exited.cancel()

        fake_api.send_voice(private_chat(ADA), ADA, voice("short_story.ogg"))
        reply = await wait_for_reply(fake_api, ADA["id"])
        transcript = fake_api.chat(ADA["id"])[0]
        assert transcript.text.startswith("🎤") and "short story about a dragon" in transcript.text.lower()
        assert len(reply.texts) >= 2 and reply.texts[-1].startswith(reply.texts[0])  # streamed by edits
        assert [label for label, _ in reply.buttons] == ["👍", "👎", "🔁", "✏️ Suggest a better answer"]

        fake_api.press(ADA, reply, button(reply, "👍"))
        await fake_api.wait_for(lambda: fake_api.calls_to("answerCallbackQuery"))
        await fake_api.wait_for(lambda: reply.buttons[0][0] == "👍 ✓")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)  # as systemd and docker stop it
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()

    # Stopped as Ctrl+C stops it: every finally ran, nothing failed (the other tests stop it with SIGINT).
    assert process.returncode == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text() and "stopped by SIGTERM" in log_path.read_text()
    with sqlite3.connect(data_dir / "iris.db") as db:
        rows = db.execute(
            "SELECT t.id, t.role, t.text, r.value, p.user_id FROM ratings r "
            "JOIN turns t ON t.id = r.turn_id JOIN people p ON p.id = r.person_id"
        ).fetchall()
    assert rows == [(turn_of(reply), "assistant", reply.text, 1, str(ADA["id"]))]
