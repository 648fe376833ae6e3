"""Iris's own words in the person's language through the real PTB client on the fake Bot API (issue #28):
the command menu registered per language, /help, the buttons under a reply, the rating's thanks and the
audio notices in German for a person whose app says ``de``, Russian after ``/language ru``, English for
everyone else, two people writing at once each in their own language, an admin's reports and tools in
German, and the inbox's set-aside notice in its sender's language.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from telegram import Update

from bots.app import App
from bots.telegram_bot import build_application, running
from bots.telegram_bot.commands import HELP
from bots.telegram_bot.inbox import SET_ASIDE, order_key
from core.i18n import translate
from tests.conftest import voice
from tests.telegram.conftest import ADMIN_ID, StartBot, telegram_settings
from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user
from tests.telegram.scenario import button, wait_for_reply, wait_for_text

LENA = {**user(21, "Lena"), "language_code": "de"}
ANA = {**user(22, "Ana"), "language_code": "es"}
BOB = {**user(23, "Bob"), "language_code": "nl"}  # no Dutch catalog: English
GRETE = {**user(ADMIN_ID, "Grete"), "language_code": "de"}  # an admin


def chat_id(person: dict[str, Any]) -> int:
    return int(str(person["id"]))


async def ask(api: FakeBotApi, person: dict[str, Any], text: str) -> str:
    """Send ``text`` (a command, with its entity) in the person's private chat; the bot's one answer."""
    before = len(api.chat(chat_id(person)))
    api.send_text(private_chat(person), person, text)
    await api.wait_for(lambda: len(api.chat(chat_id(person))) > before, timeout=30)
    return api.chat(chat_id(person))[before].text


def press_answers(api: FakeBotApi) -> list[str]:
    return [str(call.params.get("text", "")) for call in api.calls_to("answerCallbackQuery")]


async def test_the_menu_is_registered_in_every_catalogs_language(
    start_bot: StartBot, fake_api: FakeBotApi
) -> None:
    await start_bot()
    menus = {
        call.params.get("language_code"): call.params["commands"] for call in fake_api.calls_to("setMyCommands")
    }
    assert set(menus) == {None, "de", "es", "fr", "it", "pt", "ru"}  # English for all, then one per catalog
    described = {
        code: {entry["command"]: entry["description"] for entry in menu} for code, menu in menus.items()
    }
    assert described[None]["help"] == "How to talk to me"
    assert described["de"]["help"] == "Wie du mit mir sprichst"
    assert described["ru"]["reset"] == "Начать новый разговор"
    assert all(list(menu) == list(described[None]) for menu in described.values())  # same commands, same order


async def test_a_german_app_gets_german_words_and_russian_after_language_ru(
    start_bot: StartBot, fake_api: FakeBotApi
) -> None:
    await start_bot()
    help_text = await ask(fake_api, LENA, "/help")
    assert help_text == translate(HELP, "de") and help_text.startswith("Schick eine Sprachnachricht")

    fake_api.send_text(private_chat(LENA), LENA, "Hello, what is the capital of France?")
    reply = await wait_for_reply(fake_api, chat_id(LENA))
    labels = [label for label, _data in reply.buttons]
    assert "✏️ Bessere Antwort vorschlagen" in labels and "✏️ Suggest a better answer" not in labels
    fake_api.press(LENA, reply, button(reply, "👍"))
    await fake_api.wait_for(lambda: "Danke für das 👍!" in press_answers(fake_api), timeout=30)

    # Notices about audio: refused unread (too long for the limit), and unreadable bytes.
    fake_api.send_voice(private_chat(LENA), LENA, voice("greeting.ogg"), duration=4000)
    await wait_for_text(fake_api, chat_id(LENA), "Diese Sprachnachricht ist 4000 s lang")
    fake_api.send_voice(private_chat(LENA), LENA, b"not audio at all" * 64)
    await wait_for_text(fake_api, chat_id(LENA), "Ich konnte diese Aufnahme nicht lesen")

    await ask(fake_api, LENA, "/language ru")  # answered in German: the update began in it
    assert (await ask(fake_api, LENA, "/help")).startswith("Пришлите голосовое сообщение")
    assert (await ask(fake_api, LENA, "/forget")).startswith("Это удалит всё")
    forget = fake_api.chat(chat_id(LENA))[-1]
    assert [label for label, _data in forget.buttons] == ["Удалить всё", "Оставить"]
    assert not any("Traceback" in sent.text for sent in fake_api.chat(chat_id(LENA)))


async def test_two_people_at_once_each_in_their_own_language(start_bot: StartBot, fake_api: FakeBotApi) -> None:
    await start_bot()
    for _round in range(5):  # /help from both, delivered together and handled concurrently
        fake_api.send_text(private_chat(LENA), LENA, "/help")
        fake_api.send_text(private_chat(ANA), ANA, "/help")
        fake_api.send_text(private_chat(BOB), BOB, "/help")
    await fake_api.wait_for(
        lambda: all(len(fake_api.chat(chat_id(person))) >= 5 for person in (LENA, ANA, BOB)), timeout=60
    )
    assert {sent.text for sent in fake_api.chat(chat_id(LENA))} == {translate(HELP, "de")}
    assert {sent.text for sent in fake_api.chat(chat_id(ANA))} == {translate(HELP, "es")}
    assert {sent.text for sent in fake_api.chat(chat_id(BOB))} == {HELP}


async def test_an_admin_with_a_german_app_gets_the_reports_and_tools_in_german(
    start_bot: StartBot, fake_api: FakeBotApi
) -> None:
    """The admins' reports (``bots.render``) and tools speak the admin's language; figures stay figures."""
    await start_bot()
    fake_api.send_text(private_chat(LENA), LENA, "Hello, what is the capital of France?")
    await wait_for_reply(fake_api, chat_id(LENA))

    stats = await ask(fake_api, GRETE, "/stats")
    assert stats.startswith("Nachrichten: 1 (0% Sprache), Personen: 1, Gespräche: 1"), stats
    assert "Antworten: 1" in stats and "Aktives Modell: " in stats and "Messages:" not in stats
    assert (await ask(fake_api, GRETE, "/ab")).startswith("Es lief noch kein A/B-Test.")
    assert await ask(fake_api, GRETE, "/review") == "Keine vorgeschlagenen Antworten warten auf Prüfung."
    assert await ask(fake_api, GRETE, "/audit") == "Das Audit-Protokoll ist leer."
    usage = await ask(fake_api, GRETE, "/persona")
    assert usage.startswith("/persona – Personas: die Prompts, mit denen meine Antworten geschrieben werden")
    assert (await ask(fake_api, GRETE, "/persona list")).startswith("Noch keine Personas")
    # A person who is not an admin is refused in their own language.
    assert await ask(fake_api, LENA, "/stats") == "Dieser Befehl ist für Admins."
    assert not any("Traceback" in sent.text for sent in fake_api.chat(ADMIN_ID))


async def test_the_set_aside_notice_is_in_the_senders_language(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    """The inbox tells the sender of an update no attempt finished, outside any handler: in German for
    a German app, as the handlers would have chosen."""
    message = fake_api.message(private_chat(LENA), LENA, text="Hallo, wie geht's?")
    update = {"update_id": 4242, "message": message}
    inbox = app.inbox
    assert inbox.put("telegram", "4242", order_key(Update.de_json(update, None)), update)
    for attempt in range(inbox.max_attempts):  # each process that claimed it died on it
        assert inbox.claim("telegram", f"dead-{attempt}", 0.01, 10)
        time.sleep(0.05)
    settings = telegram_settings(tmp_path, served_gguf, fake_api, inbox_lease_seconds=1.0)
    async with running(build_application(app.service, settings, inbox), settings):
        notice = await wait_for_text(fake_api, chat_id(LENA), "beiseitegelegt")
    assert notice.text == translate(SET_ASIDE, "de") != SET_ASIDE
    assert notice.reply_to == message["message_id"]
