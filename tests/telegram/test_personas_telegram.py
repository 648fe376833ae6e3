"""Personas through the real PTB client on the fake Bot API (issue #29): an admin sets a group's
persona with ``iris persona use`` while the bot runs; the group's next reply is written with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bots.app import App
from core.personas import PersonaFile
from tests.fakes import RecordingGenerator
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import BOT_USERNAME, FakeBotApi, group_chat, private_chat, user
from tests.telegram.scenario import wait_for_reply

ADA = user(1, "Ada")
PIRATE = "You are a cheerful pirate. Answer in one sentence."
IRIS = str(Path(sys.executable).with_name("iris"))


def iris(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    """The admin's terminal: the real ``iris`` command on the running bot's database."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env = {**clean, "IRIS_DATA_DIR": str(app.settings.data_dir)}
    return subprocess.run([IRIS, *args], env=env, capture_output=True, text=True, timeout=120)


def system_prompts(generator: RecordingGenerator) -> list[str | None]:
    return [p[0].content if p and p[0].role == "system" else None for p in generator.prompts]


async def test_a_group_set_to_a_persona_is_answered_with_it_and_a_private_chat_is_not(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path
) -> None:
    generator = RecordingGenerator("Ahoy, matey!")
    app.service.writer.generator = generator  # what reached the model is what the test reads
    await start_bot()
    group = group_chat()

    added = iris(app, "persona", "add", "pirate", "--prompt", PIRATE)
    assert added.returncode == 0, added.stderr
    used = iris(app, "persona", "use", "telegram", str(group["id"]), "pirate")
    assert used.returncode == 0, used.stderr

    fake_api.send_text(group, ADA, f"@{BOT_USERNAME} Who are you?")
    shown = await wait_for_reply(fake_api, group["id"])
    assert "Ahoy, matey!" in shown.text
    assert system_prompts(generator)[-1] == PIRATE
    fake_api.send_text(private_chat(ADA), ADA, "Who are you?")
    await wait_for_reply(fake_api, ADA["id"])
    assert system_prompts(generator)[-1] is None  # the configured prompt: empty, the model's own
    stored = query(
        app, "SELECT chat_id, persona, persona_version FROM turns WHERE role = 'assistant' ORDER BY id"
    )
    assert stored == [(str(group["id"]), "pirate", 1), (str(ADA["id"]), None, None)]

    # The personas file (IRIS_PERSONAS_FILE) edited while the bot runs: the group's next reply follows it.
    path = tmp_path / "personas.toml"
    path.write_text('[personas.pirate]\nprompt = "You are a sleepy pirate."\n')
    app.service.writer.personas.file = PersonaFile(path, every_s=0)
    fake_api.send_text(group, ADA, f"@{BOT_USERNAME} And now?")
    await wait_for_reply(fake_api, group["id"], count=2)
    assert system_prompts(generator)[-1] == "You are a sleepy pirate."
    last = query(
        app, "SELECT persona, persona_version FROM turns WHERE role = 'assistant' ORDER BY id DESC LIMIT 1"
    )
    assert last == [("pirate", 2)]
