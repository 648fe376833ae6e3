"""``/language`` through the real PTB client on the fake Bot API (issue #28): shown, set, refused in one
line for codes it does not know, back to auto; a German text's reply is asked in German (what the
generator received), a set language wins over the message's, and the bundled English-only speech
model says so; the choice is in the database (a restart keeps it) and every turn's language stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from bots.app import App
from core.domain import ChatMessage
from core.languages import CODES_HINT, language_line
from tests.fakes import RecordingGenerator
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user
from tests.telegram.scenario import wait_for_reply

ADA = user(1, "Ada")
REFUSED = f"That is not a language I know: send /language with {CODES_HINT}."


def system_prompt(messages: Sequence[ChatMessage]) -> str | None:
    return messages[0].content if messages and messages[0].role == "system" else None


async def command(api: FakeBotApi, text: str) -> str:
    """Send ``text`` (a command, with its entity) in Ada's private chat; the bot's one answer."""
    chat_id = int(str(ADA["id"]))
    before = len(api.chat(chat_id))
    api.send_text(private_chat(ADA), ADA, text)
    await api.wait_for(lambda: len(api.chat(chat_id)) > before, timeout=30)
    await api.settle(0.2)
    assert len(api.chat(chat_id)) == before + 1, [sent.text for sent in api.chat(chat_id)[before:]]
    return api.chat(chat_id)[-1].text


async def test_language_is_set_shown_refused_and_reaches_the_prompt(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    generator = RecordingGenerator("Fine, thank you.")  # as the bundled model does: English
    app.service.writer.generator = generator
    await start_bot()
    commands = [c.params["commands"] for c in fake_api.calls_to("setMyCommands")]
    assert any(entry["command"] == "language" for entry in commands[-1])

    shown = await command(fake_api, "/language")
    assert shown.startswith("Your language: detected from each message (auto).")
    for bogus in ("/language xx", "/language ../..", "/language " + "x" * 500, "/language de es"):
        assert await command(fake_api, bogus) == REFUSED
    assert query(app, "SELECT language FROM people") in ([], [(None,)])

    chat_id = int(str(ADA["id"]))
    fake_api.send_text(private_chat(ADA), ADA, "Wie spät ist es gerade in Tokio?")
    await wait_for_reply(fake_api, chat_id)
    assert system_prompt(generator.prompts[-1]) == language_line("de")
    fake_api.send_text(private_chat(ADA), ADA, "What time is it in Tokyo right now?")
    await wait_for_reply(fake_api, chat_id, count=2)
    assert system_prompt(generator.prompts[-1]) is None  # English: the prompt as configured

    answer = await command(fake_api, "/language es")
    first, second = answer.splitlines()
    assert first == "From now on I'll answer in Spanish (es)."
    assert second.startswith("My speech model understands only English")  # the bundled tiny.en
    # From the next update on, Iris's own words are in the chosen language too (core/i18n.py).
    assert (await command(fake_api, "/language")).startswith("Tu idioma: español (es).")
    assert query(app, "SELECT language FROM people") == [("es",)]
    fake_api.send_text(private_chat(ADA), ADA, "What time is it in Tokyo right now?")
    await wait_for_reply(fake_api, chat_id, count=3)
    assert system_prompt(generator.prompts[-1]) == language_line("es")  # the person's choice wins

    back = await command(fake_api, "/language auto")
    assert back == "De vuelta a auto: detectaré tu idioma en cada mensaje."
    assert query(app, "SELECT language FROM people") == [(None,)]

    stored = query(app, "SELECT role, language, asked_language FROM turns ORDER BY id")
    assert stored == [
        ("user", "de", None),
        ("assistant", "en", "de"),
        ("user", "en", None),
        ("assistant", "en", "en"),
        ("user", "en", None),
        ("assistant", "en", "es"),
    ]
    figures = await app.service.admin.stats()
    assert figures.by_language == [("en", 2), ("de", 1)] and figures.replies_off_language == 2
