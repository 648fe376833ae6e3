"""``/persona`` through the real discord.py client on the fake Discord (issue #29): an admin adds a
persona with the slash command, a channel is switched to it and greeted in public, its next reply is
written with the persona's prompt; others and hostile input get one private line, nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bots.app import App
from core.personas import Persona
from storage.personas import SqlPersonas
from tests.discord.conftest import discord_settings, finished_reply, running, shown
from tests.discord.fake_discord import EPHEMERAL, FakeDiscord, Interaction, Json
from tests.fakes import RecordingGenerator
from tests.telegram.test_personas_telegram import system_prompts

PIRATE = "You are a cheerful pirate. Answer in one sentence."
GREETING = "Ahoy, crew! Ask me anything."
OPTION_TYPES = {"temperature": 10, "default": 5}  # Discord's number and boolean; the rest are strings


async def persona(
    fake: FakeDiscord, sub: str, user: Json, options: dict[str, Any] | None = None, *, dm: bool = False
) -> Interaction:
    """A person runs ``/persona SUB`` with its options, as Discord sends a subcommand."""
    published = next(c for c in fake.commands if c["name"] == "persona")
    assert sub in [option["name"] for option in published["options"]]
    given = [{"name": k, "type": OPTION_TYPES.get(k, 3), "value": v} for k, v in (options or {}).items()]
    data = {
        "id": published["id"],
        "name": "persona",
        "type": 1,
        "options": [{"name": sub, "type": 1, "options": given}],
    }
    channel = fake.dm_channel(user) if dm else fake.channel_id
    payload = fake._interaction(2, user, channel, data, None)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return fake.interactions[int(payload["id"])]


def stored(app: App) -> list[tuple[str | None, int, str | None]]:
    return [(p.name, p.version, p.greeting) for p in SqlPersonas(app.store.engine).personas()]


def public(fake: FakeDiscord) -> list[str]:
    return [message["content"] for message in fake.bot_messages()]


async def test_an_admin_adds_a_persona_and_a_channel_set_to_it_is_greeted_and_answered_with_it(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    generator = RecordingGenerator("Ahoy, matey!")
    app.service.writer.generator = generator
    admin, ada = fake.owner, fake.add_user("ada")
    async with running(app.service, discord_settings(tmp_path, served_gguf, fake), fake):
        added = await persona(
            fake, "add", admin, {"name": "pirate", "prompt": PIRATE, "greeting": GREETING}, dm=True
        )
        assert await shown(fake, added) == ["Added persona pirate (version 1)."]
        assert stored(app) == [("pirate", 1, GREETING)]
        listed = await shown(fake, await persona(fake, "list", admin))  # in the channel: only the admin sees it
        assert "pirate: version 1, a greeting" in listed[0] and PIRATE in listed[0]

        used = await persona(fake, "use", admin, {"name": "pirate"})
        said = await shown(fake, used, count=2)
        assert said == ["This chat now answers with persona pirate, from its next reply.", GREETING]
        assert public(fake) == [GREETING]  # the greeting for everyone; the rest privately

        asked = await fake.post(ada, "Who are you?", mention_bot=True)
        await finished_reply(fake, asked)
        assert system_prompts(generator)[-1] == PIRATE
        assert all(PIRATE not in text for text in public(fake))

    actor = f"discord:{admin['id']}"
    actions = [(e.actor, e.action.value, e.target) for e in app.store.audit_entries(None)]
    assert actions == [
        (actor, "persona.add", "pirate"),
        (actor, "persona.use", f"discord:{fake.channel_id}"),
    ]


async def test_others_and_hostile_input_get_one_private_line_and_nothing_is_stored(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    await app.service.personas.add(Persona("pirate", PIRATE), "test")
    admin, ada = fake.owner, fake.add_user("ada")
    async with running(app.service, discord_settings(tmp_path, served_gguf, fake), fake):
        for sub, options in (("add", {"name": "sneaky", "prompt": "Obey Ada."}), ("use", {"name": "pirate"})):
            refused = await persona(fake, sub, ada, options)
            assert await shown(fake, refused) == ["Only the bot's admins can do that."]
        assert await shown(fake, await persona(fake, "list", ada)) == ["Only the bot's admins can do that."]

        hostile: list[tuple[str, dict[str, Any], str]] = [
            ("add", {"name": "long", "prompt": "x" * 5000}, "at most 4000 characters (5000 given)"),
            ("add", {"name": "bell", "prompt": "Ring the bell\x07 now."}, "control characters"),
            ("add", {"name": "default", "prompt": PIRATE}, "'default' means the default persona"),
            ("add", {"name": "pirate", "prompt": PIRATE}, "exists"),
            ("add", {"name": "hot", "prompt": PIRATE, "temperature": 9.0}, "from 0 to 2"),
            ("edit", {"name": "pirate"}, "say what to change"),
            ("use", {"name": "ghost"}, "no persona named 'ghost'"),
            ("remove", {"name": "g" * 3000}, "no persona named"),
            ("remove", {"name": "ghost"}, "no persona named 'ghost'"),
        ]
        for sub, given, fragment in hostile:
            (said,) = await shown(fake, await persona(fake, sub, admin, given))
            assert fragment in said and said.startswith("Not changed:"), (sub, said)
            assert "\n" not in said and len(said) <= 300 and "Traceback" not in said
    assert all(
        m["flags"] & EPHEMERAL for m in fake.messages.values() if m["author"]["id"] == fake.bot_user["id"]
    )
    assert stored(app) == [("pirate", 1, None)]
    assert [e.action.value for e in app.store.audit_entries(None)] == ["persona.add"]
