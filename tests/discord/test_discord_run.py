"""The real ``iris run discord`` command, in its own process, against the fake Discord."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from tests.conftest import voice
from tests.discord.conftest import finished_reply, shown, turn_of
from tests.discord.fake_discord import FakeDiscord

IRIS = Path(sys.executable).with_name("iris")


def iris_environment(data_dir: Path, served_gguf: Path, **extra: str) -> dict[str, str]:
    """The process environment: no platform token or Iris setting leaks in from the test runner's."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "TELEGRAM_", "DISCORD_", "DATABASE_"))
    }
    return {
        **inherited,
        "IRIS_DATA_DIR": str(data_dir),
        "IRIS_LLM_MODEL": str(served_gguf),
        "IRIS_GENERATION_TEMPERATURE": "0",
        "IRIS_GENERATION_MAX_TOKENS": "32",
        "IRIS_LOG_LEVEL": "INFO",
        **extra,
    }


@contextlib.asynccontextmanager
async def iris_process(cwd: Path, env: dict[str, str], *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``iris ARGS`` running in ``cwd`` (no .env there); interrupted like Ctrl+C afterwards."""
    log = (cwd / "iris.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(IRIS), *args, cwd=cwd, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


def output(cwd: Path) -> str:
    return (cwd / "iris.log").read_text(errors="replace")


async def connected(fake: FakeDiscord, process: asyncio.subprocess.Process, cwd: Path) -> None:
    """Wait until the process has identified on the fake gateway (models load first)."""

    def ready() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"iris exited with {process.returncode}:\n{output(cwd)}")
        return bool(fake.identifies) and fake.connected

    await fake.wait_for(ready, 180, "iris to connect to the gateway")


async def test_iris_run_discord_answers_a_voice_message_and_stores_a_thumbs_up(
    fake: FakeDiscord, tmp_path: Path, served_gguf: Path
) -> None:
    env = iris_environment(
        tmp_path / "data", served_gguf, DISCORD_BOT_TOKEN=fake.token, DISCORD_API_BASE_URL=fake.base_url
    )
    person = fake.add_user("ada")
    async with iris_process(tmp_path, env, "run", "discord") as process:
        await connected(fake, process, tmp_path)
        audio = fake.attachment(voice("short_story.ogg"), duration=2.4)
        sent = await fake.post(person, attachments=[audio], dm=True)
        reply = await finished_reply(fake, sent, timeout=120)
        pressed = await fake.press(int(reply["id"]), f"iris:rate:up:{turn_of(reply)}", person)
        assert await shown(fake, pressed) == ["Thanks for the 👍!"]
    assert process.returncode == 130, output(tmp_path)  # Ctrl+C: stopped cleanly

    transcript = fake.replies_to(int(sent["id"]))[0]
    assert "short story about a dragon" in transcript["content"].lower()
    assert len(fake.revisions[int(reply["id"])]) >= 2  # posted early, then edited as it grew
    assert fake.identifies[0]["intents"] & (1 << 15), "the Message Content intent is requested"
    with sqlite3.connect(tmp_path / "data" / "iris.db") as db:
        stored = db.execute(
            "SELECT t.text, r.value, p.user_id FROM ratings r JOIN turns t ON t.id = r.turn_id "
            "JOIN people p ON p.id = r.person_id"
        ).fetchall()
        asked = db.execute("SELECT text, from_voice, platform FROM turns WHERE role = 'user'").fetchall()
    assert stored == [(reply["content"], 1, person["id"])]
    assert len(asked) == 1 and asked[0][1:] == (1, "discord")
    assert "short story about a dragon" in asked[0][0].lower()


async def test_iris_run_all_serves_telegram_and_discord_from_one_process_with_one_model(
    fake: FakeDiscord, tmp_path: Path, served_gguf: Path
) -> None:
    from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user

    telegram = FakeBotApi()
    await telegram.start()
    env = iris_environment(
        tmp_path / "data",
        served_gguf,
        DISCORD_BOT_TOKEN=fake.token,
        DISCORD_API_BASE_URL=fake.base_url,
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_BASE_URL=telegram.base_url,
        TELEGRAM_BASE_FILE_URL=telegram.base_file_url,
    )
    discord_person = fake.add_user("ada")
    telegram_person = user(4242, "Bea")
    try:
        async with iris_process(tmp_path, env, "run", "all") as process:
            await connected(fake, process, tmp_path)
            audio = fake.attachment(voice("short_story.ogg"), duration=2.4)
            on_discord = await fake.post(discord_person, attachments=[audio], dm=True)
            chat = private_chat(telegram_person)
            telegram.send_voice(chat, telegram_person, voice("short_story.ogg"), duration=2)
            discord_reply = await finished_reply(fake, on_discord, timeout=120)
            telegram_reply = await telegram.wait_for(
                lambda: next((s for s in telegram.chat(chat["id"]) if s.reply_markup), None), timeout=120
            )
    finally:
        await telegram.stop()

    # Both platforms got a reply, each the assistant turn stored for it (the words
    # themselves depend on the CPU's kernels, so they are not asserted).
    assert discord_reply["content"].strip() and telegram_reply.text.strip()
    log = output(tmp_path)
    assert log.count("loading whisper model") == 1 and log.count("INFO core.generation: loading") == 1
    with sqlite3.connect(tmp_path / "data" / "iris.db") as db:
        platforms = db.execute("SELECT DISTINCT platform FROM turns WHERE role = 'user' ORDER BY 1").fetchall()
    assert platforms == [("discord",), ("telegram",)]
