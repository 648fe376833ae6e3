"""The hourly limit as a person meets it in Telegram: told which limit, and when to come back."""

from __future__ import annotations

import re

from bots.app import App
from core.limits import RateLimits
from tests.telegram.conftest import ADMIN_ID, StartBot, query
from tests.telegram.fake_bot_api import FakeBotApi, private_chat, user
from tests.telegram.scenario import button, wait_for_reply, wait_for_text

ADA = user(1, "Ada")
ADMIN = user(ADMIN_ID, "Grace")


async def test_a_person_over_the_hourly_limit_is_told_when_to_come_back(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    # The limits belong to the service (the composition root fills them from the settings).
    app.service.limiter.limits = RateLimits(messages_per_hour=1)
    app.service.limiter.exempt = frozenset({str(ADMIN_ID)})
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    await wait_for_reply(fake_api, ADA["id"])
    fake_api.send_text(private_chat(ADA), ADA, "And of Spain?")
    refused = await wait_for_text(fake_api, ADA["id"], "my limit per person")
    assert refused.text.startswith("You have sent me 1 message in the last hour, my limit per person.")
    assert re.search(r"Please come back in (59|60) minutes \(at \d\d:\d\d UTC\)\.$", refused.text)
    assert query(app, "SELECT count(*) FROM turns WHERE role = 'user'") == [(1,)]

    for question in ("What is the capital of France?", "And of Spain?"):  # admins are exempt
        fake_api.send_text(private_chat(ADMIN), ADMIN, question)
    await wait_for_reply(fake_api, ADMIN_ID, count=2)


async def test_presses_over_the_hourly_limit_are_answered_with_the_limit_and_not_stored(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    app.service.limiter.limits = RateLimits(presses_per_hour=3)
    app.service.limiter.exempt = frozenset({str(ADMIN_ID)})
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    reply = await wait_for_reply(fake_api, ADA["id"])
    for n, vote in enumerate(("👍", "👎", "👍", "👎")):  # pressed back and forth, faster than the limit
        fake_api.press(ADA, reply, button(reply, vote))
        await fake_api.wait_for(lambda n=n: len(fake_api.calls_to("answerCallbackQuery")) > n)
    answers = [call.params.get("text", "") for call in fake_api.calls_to("answerCallbackQuery")]
    assert answers[:3] == ["Thanks for the 👍!", "Changed your rating to 👎.", "Changed your rating to 👍."]
    assert answers[3].startswith("You have pressed 👍/👎 3 times in the last hour, my limit per person.")
    assert "Please come back in" in answers[3]
    assert query(app, "SELECT value FROM ratings") == [(1,)]  # the fourth press changed nothing
