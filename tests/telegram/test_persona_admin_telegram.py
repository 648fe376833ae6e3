"""``/persona`` through the real PTB client on the fake Bot API (issue #29): an admin adds a persona in
the chat, a group is switched to it and greeted, its next reply is written with the persona's prompt
and said in its voice; everyone else, a group listing and hostile input get one line, nothing stored."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import core.speech
from bots.app import App, build_speaker
from bots.telegram_bot.commands import START
from core.personas import Persona
from storage.personas import SqlPersonas
from tests.conftest import make_settings
from tests.fakes import RecordingGenerator
from tests.telegram.conftest import ADMIN_ID, StartBot
from tests.telegram.fake_bot_api import BOT_USERNAME, FakeBotApi, Sent, group_chat, private_chat, user
from tests.telegram.scenario import wait_for_reply, wait_for_text
from tests.telegram.test_personas_telegram import iris, system_prompts

ADMIN = user(ADMIN_ID, "Grace")
ADA = user(1, "Ada")
GROUP = group_chat()
PIRATE = "You are a cheerful pirate. Answer in one sentence.\nNever break character."
GREETING = "Ahoy, crew! Ask me anything."


async def answer(
    fake_api: FakeBotApi, chat: dict[str, object], sender: dict[str, object], text: str, count: int = 1
) -> Sent:
    """Send ``text``; the first of the ``count`` messages the bot answers with in that chat (no more)."""
    chat_id = int(str(chat["id"]))
    before = len(fake_api.chat(chat_id))
    fake_api.send_text(chat, sender, text)
    await fake_api.wait_for(lambda: len(fake_api.chat(chat_id)) >= before + count, 30)
    await fake_api.settle(0.3)
    said = fake_api.chat(chat_id)[before:]
    assert len(said) == count, [sent.text[:80] for sent in said]
    return said[0]


def stored(app: App) -> list[tuple[str | None, int, str | None, str | None]]:
    return [(p.name, p.version, p.voice, p.greeting) for p in SqlPersonas(app.store.engine).personas()]


async def test_an_admin_adds_a_persona_in_the_chat_and_a_group_set_to_it_is_greeted_and_answered_with_it(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    generator = RecordingGenerator("Ahoy, matey!")
    app.service.writer.generator = generator  # what reached the model is what the test reads
    await start_bot()
    mine = private_chat(ADMIN)

    added = await answer(fake_api, mine, ADMIN, f"/persona add pirate {PIRATE}")
    assert added.text == "Added persona pirate (version 1)."
    greeted = await answer(fake_api, mine, ADMIN, f"/persona set pirate greeting {GREETING}")
    assert greeted.text == "Persona pirate is at version 1."
    listed = iris(app, "persona", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [(row["name"], row["prompt"], row["greeting"]) for row in json.loads(listed.stdout)]
    assert rows == [("pirate", PIRATE, GREETING)]
    shown = await answer(fake_api, mine, ADMIN, "/persona list")
    assert "pirate: version 1, a greeting" in shown.text and "You are a cheerful pirate." in shown.text

    switched = await answer(fake_api, GROUP, ADMIN, "/persona use pirate", count=2)
    assert switched.text == "This chat now answers with persona pirate, from its next reply."
    greeting = await wait_for_text(fake_api, GROUP["id"], GREETING)
    assert greeting.text == GREETING and greeting.message_id > switched.message_id

    fake_api.send_text(GROUP, ADA, f"@{BOT_USERNAME} Who are you?")
    await wait_for_reply(fake_api, GROUP["id"])
    assert system_prompts(generator)[-1] == PIRATE
    welcome = await answer(fake_api, GROUP, ADA, "/start")
    assert welcome.text == f"{GREETING}\n\n{START}"  # the greeting first, the consent text whole
    assert (await answer(fake_api, private_chat(ADA), ADA, "/start")).text == START  # the default: none
    assert all("cheerful pirate" not in sent.text for sent in fake_api.chat(GROUP["id"]))

    actions = [(e.actor, e.action.value, e.target) for e in app.store.audit_entries(None)]
    assert actions == [
        (f"telegram:{ADMIN_ID}", "persona.add", "pirate"),
        (f"telegram:{ADMIN_ID}", "persona.edit", "pirate"),
        (f"telegram:{ADMIN_ID}", "persona.use", f"telegram:{GROUP['id']}"),
    ]


async def test_others_a_group_listing_and_hostile_input_get_one_line_and_nothing_is_stored(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await app.service.personas.add(Persona("pirate", PIRATE), "test")
    await start_bot()

    for chat in (private_chat(ADA), GROUP):
        for text in ("/persona add sneaky You obey Ada.", "/persona use pirate", "/persona list"):
            assert (await answer(fake_api, chat, ADA, text)).text == "That command is for admins."
    in_group = await answer(fake_api, GROUP, ADMIN, "/persona list")
    assert "only in a private chat" in in_group.text
    assert all("cheerful pirate" not in sent.text for sent in fake_api.chat(GROUP["id"]))

    hostile = {
        f"/persona add long {'x' * 5000}": "at most 4000 characters (5000 given)",
        "/persona add bell Ring the bell\x07 now.": "control characters",
        f"/persona add default {PIRATE}": "'default' means the default persona",
        f"/persona add {'n' * 41} Hi.": "at most 40 characters",
        "/persona add pi/rate Hi.": "cannot name a persona",
        f"/persona add pirate {PIRATE}": "exists",
        "/persona use ghost": "no persona named 'ghost'",
        f"/persona remove {'g' * 3000}": "no persona named",
        "/persona set pirate temperature hot": "a number from 0 to 2",
        "/persona set pirate temperature 9": "from 0 to 2",
        "/persona set pirate colour red": "Say what to set",
        "/persona edit pirate": "Give the prompt",
        "/persona frobnicate": "/persona list",
    }
    if shutil.which("espeak-ng"):
        hostile["/persona set pirate voice xx-nosuch"] = "espeak-ng has no voice 'xx-nosuch'"
    mine = private_chat(ADMIN)
    for text, fragment in hostile.items():
        said = (await answer(fake_api, mine, ADMIN, text)).text
        assert fragment in said, (text[:40], said)
        assert "Traceback" not in said and len(said) <= 1000
        if not text.startswith("/persona frobnicate"):  # the usage lists the subcommands, one a line
            assert "\n" not in said and len(said) <= 300
    assert stored(app) == [("pirate", 1, None, None)]
    assert [e.action.value for e in app.store.audit_entries(None)] == ["persona.add"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_a_personas_voice_says_its_replies_and_one_espeak_lacks_falls_back_with_one_warning(
    start_bot: StartBot,
    fake_api: FakeBotApi,
    app: App,
    tmp_path: Path,
    served_gguf: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app.service.writer.generator = RecordingGenerator("Good evening. Dinner is served.")
    app.service.replies.speaker = build_speaker(
        make_settings(tmp_path, served_gguf, tts_replies="always"), app.store
    )
    voices: list[str] = []  # the -v of every espeak-ng run that made audio (espeak-ng itself runs)
    run = core.speech._run

    def recording(command: list[str], text: str) -> bytes:
        voices.append(command[command.index("-v") + 1])
        return run(command, text)

    monkeypatch.setattr(core.speech, "_run", recording)
    await start_bot()
    mine = private_chat(ADMIN)
    await answer(fake_api, mine, ADMIN, "/persona add butler You are a butler.")
    assert (await answer(fake_api, mine, ADMIN, "/persona set butler voice en-gb")).text.startswith("Persona")
    await answer(fake_api, mine, ADMIN, "/persona use butler")  # no greeting: one message

    fake_api.send_text(mine, ADMIN, "Hello there")
    await wait_for_reply(fake_api, ADMIN_ID)
    await fake_api.wait_for(lambda: len(fake_api.audio) == 1)
    assert voices and set(voices) == {"en-gb"}

    # A voice espeak-ng lacks (a personas file is not checked): the deployment's voice, one warning.
    SqlPersonas(app.store.engine).edit_persona("butler", "test", voice="xx-nosuch")
    voices.clear()
    with caplog.at_level(logging.WARNING, logger="core.speaking"):
        for count in (2, 3):
            fake_api.send_text(mine, ADMIN, f"Hello again, {count}")
            await wait_for_reply(fake_api, ADMIN_ID, count=count)
            await fake_api.wait_for(lambda: len(fake_api.audio) == count)  # noqa: B023
    assert voices and set(voices) == {"en-us"}
    assert len([r for r in caplog.records if "xx-nosuch" in r.getMessage()]) == 1
    assert all("could not say" not in sent.text for sent in fake_api.chat(ADMIN_ID))
