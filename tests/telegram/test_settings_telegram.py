"""``/settings`` through the real PTB client on the fake Bot API (issue #29): an admin switches a group
to a persona in the menu and its next reply is written with it (another chat keeps the default, a
restart keeps both); spoken replies, earlier turns and reply length reach the reply; a non-admin
in a group is refused and nothing changes; forged, huge and stale presses get one answer.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import text as sql

from bots.app import App, build_app, build_speaker
from bots.settings import Settings
from bots.telegram_bot import build_application, running
from bots.telegram_bot.settings_menu import STALE
from core.chat_settings import LENGTH_LINES, ReplyLength
from core.domain import AuditAction, ChatMessage, ChatRef
from core.personas import Persona
from core.ports import Generation
from core.transcription import WhisperTranscriber
from storage.personas import SqlPersonas
from tests.conftest import _postgres_database, make_settings, voice
from tests.fakes import RecordingGenerator
from tests.telegram.conftest import ADMIN_ID, StartBot, telegram_settings
from tests.telegram.fake_bot_api import BOT_USERNAME, FakeBotApi, Sent, group_chat, private_chat, user
from tests.telegram.scenario import wait_for_reply, wait_for_text

ADA = user(1, "Ada")
ADMIN = user(ADMIN_ID, "Grace")
AHOY = "Ahoy, mateys! Ask me anything."
PIRATE = "You are a cheerful pirate. Answer in one sentence."
GROUP = group_chat()


class OptionsRecorder(RecordingGenerator):
    """What reached the model: each prompt, and each reply's sampling options."""

    def __init__(self) -> None:
        super().__init__("Ahoy, matey! Fair winds.")
        self.options: list[Generation] = []

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        self.options.append(options)
        async for piece in super().stream(messages, options):
            yield piece


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def both_databases(request: pytest.FixtureRequest, tmp_path: Path, served_gguf: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield make_settings(tmp_path, served_gguf)
        return
    with contextlib.contextmanager(_postgres_database)() as url:
        yield make_settings(tmp_path, served_gguf, database_url=url)


def system_prompt(messages: Sequence[ChatMessage]) -> str | None:
    return messages[0].content if messages and messages[0].role == "system" else None


async def open_menu(api: FakeBotApi, chat: dict[str, object], who: dict[str, object]) -> Sent:
    chat_id = int(str(chat["id"]))
    before = len(api.chat(chat_id))
    api.send_text(chat, who, "/settings")
    await api.wait_for(lambda: len(api.chat(chat_id)) > before, timeout=30)
    return api.chat(chat_id)[-1]


async def press(api: FakeBotApi, who: dict[str, object], menu: Sent, data: str) -> tuple[str, bool]:
    """Press ``data`` on ``menu``; the answer the presser's client shows (and whether an alert)."""

    def edits() -> int:
        return sum(c.params["message_id"] == menu.message_id for c in api.calls_to("editMessageText"))

    before = edits()
    query_id = api.press(who, menu, data)["callback_query"]["id"]

    def answered() -> list[dict[str, object]]:
        return [
            c.params for c in api.calls_to("answerCallbackQuery") if c.params["callback_query_id"] == query_id
        ]

    [answer] = await api.wait_for(answered, timeout=30)
    if not answer.get("show_alert"):  # a change, or a stale menu: the menu is edited to show the values now
        await api.wait_for(lambda: edits() > before, timeout=30)
        await api.settle(0.1)
    return str(answer.get("text")), bool(answer.get("show_alert"))


def checked(menu: Sent) -> list[str]:
    """The menu's current choices: the labels with ✓."""
    return [label for label, _ in menu.buttons if label.endswith("✓")]


async def test_a_group_switched_to_a_persona_in_settings_answers_with_it_and_a_restart_keeps_it(
    both_databases: Settings,
    transcriber: WhisperTranscriber,
    fake_api: FakeBotApi,
    tmp_path: Path,
    served_gguf: Path,
) -> None:
    generator = OptionsRecorder()
    settings = telegram_settings(tmp_path, served_gguf, fake_api, database_url=both_databases.database_url)

    async def start(stack: AsyncExitStack) -> App:
        app = build_app(settings)
        stack.callback(app.close)
        app.service.listener.transcriber = transcriber
        app.service.writer.generator = generator  # what reached the model is what the test reads
        await stack.enter_async_context(running(build_application(app.service, settings), settings))
        return app

    async with AsyncExitStack() as stack:
        app = await start(stack)
        SqlPersonas(app.store.engine).add_persona(Persona("pirate", PIRATE, greeting=AHOY), "console:grace")
        commands = [c.params["commands"] for c in fake_api.calls_to("setMyCommands")]
        assert any(command["command"] == "settings" for command in commands[-1])

        # A non-admin in the group: one line, no menu; their press on the admin's menu changes nothing.
        refused = await open_menu(fake_api, GROUP, ADA)
        assert refused.text == "Only an admin can change this chat's settings." and not refused.buttons
        menu = await open_menu(fake_api, GROUP, ADMIN)
        assert checked(menu) == ["🎭 default ✓", "🔊 default ✓", "📏 default ✓", "🧵 default ✓"]
        assert ("🎭 pirate", "set:p:pirate") in menu.buttons
        text, alert = await press(fake_api, ADA, menu, "set:p:pirate")
        assert (text, alert) == ("Only an admin can change this chat's settings.", True)
        assert "🎭 Persona: default (the configured prompt)" in menu.text

        text, _ = await press(fake_api, ADMIN, menu, "set:p:pirate")
        assert text == "Saved. persona: pirate"
        assert "🎭 Persona: pirate" in menu.text and "🎭 pirate ✓" in checked(menu)
        await wait_for_text(fake_api, GROUP["id"], AHOY)  # the persona the group now has says hello

        fake_api.send_text(GROUP, ADA, f"@{BOT_USERNAME} Who are you?")
        await wait_for_reply(fake_api, GROUP["id"])
        assert system_prompt(generator.prompts[-1]) == PIRATE
        fake_api.send_text(private_chat(ADA), ADA, "Who are you?")
        await wait_for_reply(fake_api, ADA["id"])
        assert system_prompt(generator.prompts[-1]) is None  # the default: the model's own prompt
        entries = await app.service.admin.audit_trail()
        assert [(e.actor, e.action, e.target) for e in entries] == [
            (f"telegram:{ADMIN_ID}", AuditAction.PERSONA_USE, f"telegram:{GROUP['id']}")
        ]

    async with AsyncExitStack() as stack:  # a restart: a new application and service on the same database
        app = await start(stack)
        fake_api.send_text(GROUP, ADA, f"@{BOT_USERNAME} Still there?")
        await wait_for_reply(fake_api, GROUP["id"], count=2)
        assert system_prompt(generator.prompts[-1]) == PIRATE
        fake_api.send_text(private_chat(ADA), ADA, "Still there?")
        await wait_for_reply(fake_api, ADA["id"], count=2)
        assert system_prompt(generator.prompts[-1]) is None
        with app.store.engine.connect() as connection:
            stored = connection.execute(
                sql("SELECT chat_id, persona FROM turns WHERE role = 'assistant' ORDER BY id")
            ).all()
        group, private = str(GROUP["id"]), str(ADA["id"])
        assert [tuple(row) for row in stored] == [(group, "pirate"), (private, None)] * 2


async def test_earlier_turns_and_reply_length_in_settings_reach_the_model(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    """In her private chat Ada sets her own (IRIS_SETTINGS_SELF is true by default)."""
    generator = OptionsRecorder()
    app.service.writer.generator = generator
    await start_bot()
    chat = private_chat(ADA)
    fake_api.send_text(chat, ADA, "My name is Ada.")
    await wait_for_reply(fake_api, ADA["id"])
    fake_api.send_text(chat, ADA, "What is my name?")
    await wait_for_reply(fake_api, ADA["id"], count=2)
    assert len(generator.prompts[-1]) == 3 and generator.options[-1].max_tokens == 48

    menu = await open_menu(fake_api, chat, ADA)
    assert (await press(fake_api, ADA, menu, "set:t:0"))[0] == "Saved. history turns: 0"
    assert (await press(fake_api, ADA, menu, "set:l:short"))[0] == "Saved. reply length: short"
    assert checked(menu) == ["🎭 default ✓", "🔊 default ✓", "📏 short ✓", "🧵 0 ✓"]
    fake_api.send_text(chat, ADA, "And now?")
    await wait_for_reply(fake_api, ADA["id"], count=3)
    short = LENGTH_LINES[ReplyLength.SHORT]
    assert generator.prompts[-1] == [ChatMessage("system", short), ChatMessage("user", "And now?")]
    assert generator.options[-1].max_tokens == 16  # a quarter of 48, at least 16

    app.service.chat_settings.self_service = False  # IRIS_SETTINGS_SELF=false: admins only
    text, alert = await press(fake_api, ADA, menu, "set:l:long")
    assert (text, alert) == ("Only an admin can change this chat's settings.", True)
    refused = await open_menu(fake_api, chat, ADA)
    assert refused.text == "Only an admin can change this chat's settings."
    view = await app.service.chat_settings.view(ChatRef("telegram", str(ADA["id"])))
    assert view.settings.length is ReplyLength.SHORT  # unchanged


async def test_forged_huge_unknown_and_stale_presses_get_the_stale_answer_and_change_nothing(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, caplog: pytest.LogCaptureFixture
) -> None:
    personas = SqlPersonas(app.store.engine)
    personas.add_persona(Persona("pirate", PIRATE), "console:grace")
    await start_bot()
    menu = await open_menu(fake_api, GROUP, ADMIN)
    personas.remove_persona("pirate", "console:grace")  # the menu still offers it: stale
    caplog.set_level(logging.ERROR)
    for data in [
        "set:p:pirate",
        "set:s:loud",
        "set:t:999",
        "set:t:41",
        "set:zz:1",
        "set:p:" + "x" * 500,
        "set:",
    ]:
        assert await press(fake_api, ADMIN, menu, data) == (STALE, False), data
    assert "🎭 pirate" not in [label for label, _ in menu.buttons]  # the menu shown afresh
    assert checked(menu) == ["🎭 default ✓", "🔊 default ✓", "📏 default ✓", "🧵 default ✓"]
    assert await app.service.admin.audit_trail() == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_spoken_replies_always_speaks_text_and_off_keeps_a_voice_note_to_text(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    """The deployment's mode is mirror; the group's setting wins over it and over Ada's /voice on."""
    app.service.replies.speaker = build_speaker(
        make_settings(tmp_path, served_gguf, tts_replies="mirror"), app.store
    )
    await start_bot()
    menu = await open_menu(fake_api, GROUP, ADMIN)
    assert "🔊 Spoken replies: default (mirror)" in menu.text
    await press(fake_api, ADMIN, menu, "set:s:always")
    fake_api.send_text(GROUP, ADA, f"@{BOT_USERNAME} Hello there")
    first = await wait_for_reply(fake_api, GROUP["id"])
    (note,) = await fake_api.wait_for(lambda: fake_api.audio, timeout=60)
    assert note.chat_id == GROUP["id"] and note.method == "sendVoice"

    fake_api.send_text(private_chat(ADA), ADA, "/voice on")
    await wait_for_text(fake_api, ADA["id"], "voice")
    await press(fake_api, ADMIN, menu, "set:s:off")
    fake_api.send_voice(GROUP, ADA, voice("capital_of_france.ogg"), reply_to=first)  # a reply to Iris
    await wait_for_reply(fake_api, GROUP["id"], count=2)
    await fake_api.settle(1.0)
    assert len(fake_api.audio) == 1  # the text reply only
