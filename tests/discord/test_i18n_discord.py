"""Iris's own words on Discord in the person's language (issue #28), through the real discord.py client on
the fake Discord: the published commands carry their descriptions in every catalog's locales, and an
interaction whose locale is ``es-ES`` gets /help, notices, the /forget question, its buttons and its
answer in Spanish, while an ``en-US`` one at the same time gets English; an admin whose client says ``de``
gets the reports and /persona in German.
"""

from __future__ import annotations

from pathlib import Path

from bots.app import App
from bots.discord_bot.commands import HELP
from core.i18n import translate
from tests.discord.conftest import discord_settings, running, shown
from tests.discord.fake_discord import FakeDiscord, walk
from tests.discord.test_persona_admin_discord import persona


async def test_published_commands_carry_their_localizations(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    async with running(app.service, discord_settings(tmp_path, served_gguf, fake), fake):
        published = {command["name"]: command for command in fake.commands}
    help_command = published["help"]
    assert help_command["description"] == "What Iris does and how to use it"
    localized = help_command["description_localizations"]
    assert localized["es-ES"] == localized["es-419"] == "Qué hace Iris y cómo usarla"
    assert localized["de"] == "Was Iris macht und wie man sie benutzt"
    assert {"fr", "ru"} <= set(localized) and not {"en-US", "en-GB"} & set(localized)
    assert help_command["name_localizations"] == {}  # names stay what people type
    [code] = published["language"]["options"]
    assert code["name"] == "code" and code["description_localizations"]["ru"].startswith("код ISO 639-1")
    for command in published.values():  # each is described in every catalog's language, /persona's too
        assert {"de", "es-ES", "fr", "ru"} <= set(command["description_localizations"]), command["name"]
    for sub in published["persona"]["options"]:
        assert {"de", "es-ES", "fr", "ru"} <= set(sub["description_localizations"]), sub["name"]
    assert published["persona"]["description_localizations"]["de"].startswith("Personas: die Prompts")


async def test_an_es_es_interaction_is_answered_in_spanish(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    ana = {**fake.add_user("ana"), "locale": "es-ES"}
    ada = fake.add_user("ada")  # en-US
    async with running(app.service, discord_settings(tmp_path, served_gguf, fake), fake):
        in_spanish, in_english = await fake.command("help", ana), await fake.command("help", ada)
        assert await shown(fake, in_spanish) == [translate(HELP, "es")]
        assert await shown(fake, in_english) == [HELP]
        assert await shown(fake, await fake.command("reset", ana)) == [
            "No había nada que reiniciar; simplemente escribe."
        ]

        asked = await fake.command("forget", ana)
        [question] = await shown(fake, asked)
        assert question.startswith("Esto borra tus mensajes") and question.endswith("¿Seguro?")
        confirm = fake.messages[asked.original_id or 0]
        labels = [component.get("label") for component in walk(confirm["components"]) if component["type"] == 2]
        assert labels == ["Borrar todo", "Conservar"]
        kept = await fake.press(int(confirm["id"]), f"iris:forget:no:{ana['id']}", ana)
        assert await shown(fake, kept) == ["No se borró nada."]


async def test_an_admin_with_a_german_client_gets_the_reports_and_persona_in_german(
    fake: FakeDiscord, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    """The admins' reports (``bots.render``, shared with Telegram) and /persona speak the admin's language."""
    admin = {**fake.owner, "locale": "de"}
    lena = {**fake.add_user("lena"), "locale": "de"}
    async with running(app.service, discord_settings(tmp_path, served_gguf, fake), fake):
        [stats] = await shown(fake, await fake.command("stats", admin))
        assert stats.startswith("Nachrichten: 0 (0% Sprache), Personen: 0, Gespräche: 0"), stats
        assert "Antworten: 0" in stats and "Aktives Modell: " in stats and "Messages:" not in stats
        [ab] = await shown(fake, await fake.command("ab", admin))
        assert ab.startswith("Es lief noch kein A/B-Test.")
        assert await shown(fake, await fake.command("audit", admin)) == ["Das Audit-Protokoll ist leer."]
        [listed] = await shown(fake, await persona(fake, "list", admin))
        assert listed.startswith("Noch keine Personas")
        added = await persona(fake, "add", admin, {"name": "pirat", "prompt": "Du bist ein Pirat."})
        assert await shown(fake, added) == ["Persona pirat hinzugefügt (Version 1)."]
        assert await shown(fake, await persona(fake, "list", lena)) == ["Das können nur die Admins des Bots."]
