"""``/language`` through the real discord.py client on the fake Discord (issue #28): published, shown,
set and refused in one ephemeral line, back to auto; a set language reaches the next reply's system
prompt (what the generator received), and a Spanish DM's reply is asked in Spanish without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text as sql

from bots.app import App
from core.domain import ChatMessage
from core.languages import CODES_HINT, language_line
from tests.discord.conftest import discord_settings, finished_reply, running, shown
from tests.discord.fake_discord import EPHEMERAL, FakeDiscord
from tests.fakes import RecordingGenerator

REFUSED = f"That is not a language I know: send /language with {CODES_HINT}."


def system_prompt(messages: Sequence[ChatMessage]) -> str | None:
    return messages[0].content if messages and messages[0].role == "system" else None


async def language(fake: FakeDiscord, who: dict[str, str], code: str | None = None) -> str:
    """Run /language (with ``code``); the one answer the person saw, only to them."""
    interaction = await fake.command("language", who, options={"code": code} if code is not None else None)
    [answer] = await shown(fake, interaction)
    message = fake.messages[
        interaction.followup_ids[-1] if interaction.followup_ids else interaction.original_id or 0
    ]
    assert int(str(message["flags"])) & EPHEMERAL
    return answer


async def test_language_command_on_discord(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    generator = RecordingGenerator("Fine, thank you.")
    app.service.writer.generator = generator
    config = discord_settings(tmp_path, served_gguf, fake)
    ada = fake.add_user("ada")
    async with running(app.service, config, fake):
        assert "language" in [command["name"] for command in fake.commands]
        assert (await language(fake, ada)).startswith("Your language: detected from each message (auto).")
        for bogus in ("xx", "../..", "y" * 500):
            assert await language(fake, ada, bogus) == REFUSED

        asked = await fake.post(ada, "¿Me ayudas a escribir un correo a mi jefe?", dm=True)
        await finished_reply(fake, asked)
        assert system_prompt(generator.prompts[-1]) == language_line("es")

        answer = await language(fake, ada, "ru")
        assert answer.splitlines()[0] == "From now on I'll answer in Russian (ru)."
        # From the next interaction on, Iris's own words are in the chosen language too (core/i18n.py).
        assert (await language(fake, ada)).startswith("Ваш язык: русский (ru).")
        asked = await fake.post(ada, "Who are you?", mention_bot=True)
        await finished_reply(fake, asked)
        assert system_prompt(generator.prompts[-1]) == language_line("ru")
        back = await language(fake, ada, "auto")  # still in Russian: the interaction began in it
        assert back == "Снова auto: я буду определять ваш язык по каждому сообщению."

    with app.store.engine.connect() as connection:
        turns = connection.execute(sql("SELECT role, language, asked_language FROM turns ORDER BY id")).all()
        person = connection.execute(sql("SELECT language FROM people WHERE user_id = :id"), {"id": ada["id"]})
        assert person.scalar_one() is None
    assert [tuple(row) for row in turns] == [
        ("user", "es", None),
        ("assistant", "en", "es"),
        ("user", "en", None),
        ("assistant", "en", "ru"),
    ]
