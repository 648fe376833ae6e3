"""``/settings`` through the real discord.py client on the fake Discord (issue #29): an admin switches a
channel to a persona and its next reply is written with it (a DM keeps the default, a restart
keeps both); earlier turns and reply length reach the model; a non-admin in a server is refused
and nothing changes; values no choice has (typed by a modified client) get one line.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from sqlalchemy import text as sql

from bots.app import App, build_app
from core.chat_settings import LENGTH_LINES, ReplyLength
from core.domain import AuditAction, ChatMessage, ChatRef
from core.personas import Persona
from core.ports import Generation
from storage.personas import SqlPersonas
from tests.discord.conftest import discord_settings, finished_reply, running, shown
from tests.discord.fake_discord import EPHEMERAL, FakeDiscord
from tests.fakes import RecordingGenerator

PIRATE = "You are a cheerful pirate. Answer in one sentence."


class OptionsRecorder(RecordingGenerator):
    """What reached the model: each prompt, and each reply's sampling options."""

    def __init__(self) -> None:
        super().__init__("Ahoy, matey! Fair winds.")
        self.options: list[Generation] = []

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        self.options.append(options)
        async for piece in super().stream(messages, options):
            yield piece


def system_prompt(messages: Sequence[ChatMessage]) -> str | None:
    return messages[0].content if messages and messages[0].role == "system" else None


async def settings(fake: FakeDiscord, who: dict[str, str], dm: bool = False, **options: str) -> str:
    """Run /settings with ``options``; the one answer the person saw (ephemeral)."""
    interaction = await fake.command("settings", who, dm=dm, options=options)
    [answer] = await shown(fake, interaction)
    message = fake.messages[
        interaction.followup_ids[-1] if interaction.followup_ids else interaction.original_id or 0
    ]
    assert int(str(message["flags"])) & EPHEMERAL
    return answer


async def test_a_channel_switched_to_a_persona_answers_with_it_and_a_restart_keeps_it(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    generator = OptionsRecorder()
    app.service.writer.generator = generator
    config = discord_settings(tmp_path, served_gguf, fake)
    ada = fake.add_user("ada")
    SqlPersonas(app.store.engine).add_persona(Persona("pirate", PIRATE), "console:owner")
    async with running(app.service, config, fake):
        assert "settings" in [command["name"] for command in fake.commands]
        refused = await settings(fake, ada, persona="pirate")
        assert refused == "Only an admin can change this chat's settings."
        shown_now = await settings(fake, fake.owner)
        assert "🎭 Persona: default (the configured prompt)" in shown_now

        changed = await settings(fake, fake.owner, persona="pirate", spoken="off")
        assert changed.startswith("Changed: persona, spoken replies.")
        assert "🎭 Persona: pirate" in changed and "🔊 Spoken replies: off" in changed
        asked = await fake.post(ada, "Who are you?", mention_bot=True)
        await finished_reply(fake, asked)
        assert system_prompt(generator.prompts[-1]) == PIRATE
        in_dm = await fake.post(ada, "Who are you?", dm=True)
        await finished_reply(fake, in_dm)
        assert system_prompt(generator.prompts[-1]) is None

    restarted = build_app(app.settings)  # a new process on the same database
    try:
        restarted.service.writer.generator = generator
        async with running(restarted.service, config, fake):
            asked = await fake.post(ada, "Still there?", mention_bot=True)
            await finished_reply(fake, asked)
            assert system_prompt(generator.prompts[-1]) == PIRATE
            in_dm = await fake.post(ada, "Still there?", dm=True)
            await finished_reply(fake, in_dm)
            assert system_prompt(generator.prompts[-1]) is None
    finally:
        restarted.close()
    with app.store.engine.connect() as connection:
        stored = connection.execute(
            sql("SELECT chat_id, persona FROM turns WHERE role = 'assistant' ORDER BY id")
        ).all()
    channel, dm = str(fake.channel_id), str(fake.dm_channel(ada))
    assert [tuple(row) for row in stored] == [(channel, "pirate"), (dm, None)] * 2
    entries = [(e.action, e.target, e.details) for e in await app.service.admin.audit_trail()]
    target = f"discord:{fake.channel_id}"
    assert entries == [
        (AuditAction.PERSONA_USE, target, {"persona": "pirate"}),
        (AuditAction.SETTINGS_CHANGE, target, {"setting": "spoken_replies", "value": "off"}),
    ]


async def test_earlier_turns_and_length_reach_the_model_and_bad_values_change_nothing(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    generator = OptionsRecorder()
    app.service.writer.generator = generator
    ada = fake.add_user("ada")
    async with running(app.service, discord_settings(tmp_path, served_gguf, fake), fake):
        first = await fake.post(ada, "My name is Ada.", dm=True)
        await finished_reply(fake, first)
        # In her DM Ada sets her own (IRIS_SETTINGS_SELF is true by default).
        answer = await settings(fake, ada, dm=True, turns="0", length="short")
        assert answer.startswith("Changed: reply length, history turns.")
        asked = await fake.post(ada, "What is my name?", dm=True)
        await finished_reply(fake, asked)
        short = LENGTH_LINES[ReplyLength.SHORT]
        assert generator.prompts[-1] == [ChatMessage("system", short), ChatMessage("user", "What is my name?")]
        assert generator.options[-1].max_tokens == 16  # a quarter of the tests' 48, at least 16

        before = await app.service.chat_settings.view(ChatRef("discord", str(fake.dm_channel(ada))))
        for options in (
            {"persona": "x" * 5000},
            {"persona": "ghost"},
            {"persona": "@everyone"},
            {"turns": "999"},
            {"spoken": "loud", "length": "long"},
            {"length": "long", "turns": "-1"},
        ):
            answer = await settings(fake, ada, dm=True, **options)
            assert answer.startswith("Nothing changed: ") and "\n" not in answer and len(answer) < 100, answer
        after = await app.service.chat_settings.view(ChatRef("discord", str(fake.dm_channel(ada))))
        assert after.settings == before.settings

        app.service.chat_settings.self_service = False  # IRIS_SETTINGS_SELF=false: admins only
        answer = await settings(fake, ada, dm=True, length="long")
        assert answer == "Only an admin can change this chat's settings."
    assert [e.actor for e in await app.service.admin.audit_trail()] == [f"discord:{ada['id']}"] * 2
