"""A busy Telegram group gets no 429 storm: the bot keeps within Telegram's sending limits itself.

The fake Bot API enforces Telegram's documented limits (about one message a second in a chat,
20 a minute in a group, 30 a second overall) as strict sliding windows, ten times shorter than
Telegram's; the bot's limiter is given the same shortened limits. The model is scripted (its
words known, written at once): what is tested is how the replies get to the chats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bots.app import App
from bots.telegram_bot import build_application, running
from bots.telegram_bot.limits import ChatRateLimiter
from core.service import ChatService
from tests.fakes import ScriptedGenerator
from tests.telegram.conftest import query, telegram_settings
from tests.telegram.fake_bot_api import BOT_USERNAME, FakeBotApi, group_chat, private_chat, user
from tests.telegram.scenario import rated_replies, wait_for_reply

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

SCALE = 0.1  # a group's minute lasts 6 s
ANSWER = "A short answer, for the group."
NAMES = ["Ada", "Bob", "Cy", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo"]
CROWD = [user(10 + n, name) for n, name in enumerate(NAMES)]
QUESTIONS_EACH = 3
ALONE = user(99, "Zoe")
TEAM = group_chat()
UNPACED = {"per_second_overall": 1e6, "per_second_in_a_chat": 1e6, "per_minute_in_a_group": 1e6}


@asynccontextmanager
async def serving(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path, limiter: ChatRateLimiter
) -> AsyncIterator[None]:
    """The real Telegram application, with ``limiter`` pacing its sends, on a scripted model."""
    app.service = ChatService(
        app.store, app.transcriber, ScriptedGenerator(ANSWER, pieces=2), app.service.config
    )
    fake_api.enforce_limits(time_scale=SCALE)
    settings = telegram_settings(tmp_path, served_gguf, fake_api)
    async with running(build_application(app.service, settings, rate_limiter=limiter), settings):
        yield


def burst(fake_api: FakeBotApi) -> list[dict[str, Any]]:
    """Everyone in the group asks the bot a few things at once; one person asks in private meanwhile."""
    asked = []
    for round_ in range(QUESTIONS_EACH):
        for person in CROWD:
            asked.append(fake_api.send_text(TEAM, person, f"@{BOT_USERNAME} question {round_ + 1}, please"))
        if round_ == 0:
            fake_api.send_text(private_chat(ALONE), ALONE, "A question of my own.")
    return asked


async def test_a_busy_group_gets_every_reply_with_no_flood_wait_and_a_private_chat_is_not_held_back(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    async with serving(app, fake_api, tmp_path, served_gguf, ChatRateLimiter(time_scale=SCALE)):
        asked = burst(fake_api)

        private = await wait_for_reply(fake_api, ALONE["id"], timeout=10)
        assert private.text == ANSWER
        assert len(rated_replies(fake_api, TEAM["id"])) < len(asked)  # it did not wait for the group's
        await wait_for_reply(fake_api, TEAM["id"], count=len(asked), timeout=45)

    replies = {sent.reply_to: sent for sent in rated_replies(fake_api, TEAM["id"])}
    assert {question["message_id"]: replies[question["message_id"]].text for question in asked} == {
        question["message_id"]: ANSWER for question in asked
    }
    assert fake_api.flood_waits == []
    sends_in_group = [
        call
        for call in fake_api.calls
        if call.params.get("chat_id") == TEAM["id"] and call.method != "sendChatAction"
    ]
    assert len(sends_in_group) > 20  # more than a group may send in a minute: the pacing was needed


async def test_the_same_burst_unpaced_meets_flood_control_and_loses_replies(
    app: App, fake_api: FakeBotApi, tmp_path: Path, served_gguf: Path
) -> None:
    # What the fake does to a bot that sends as fast as it writes and gives up on a 429.
    unpaced = ChatRateLimiter(**UNPACED, max_retries=0, time_scale=SCALE)
    async with serving(app, fake_api, tmp_path, served_gguf, unpaced):
        asked = burst(fake_api)
        stored = len(asked) + 1
        await fake_api.wait_for(
            lambda: query(app, "SELECT COUNT(*) FROM turns WHERE role = 'assistant'") == [(stored,)], 30
        )
    # Every handler has finished: the application waits for them when it stops.

    assert len(fake_api.flood_waits) >= 10
    answered = {sent.reply_to for sent in rated_replies(fake_api, TEAM["id"])}
    assert len(answered) < len(asked)  # people in the group saw no reply to some of their questions
