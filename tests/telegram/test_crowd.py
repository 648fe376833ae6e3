"""Telegram under a crowd: waiting is shown, one chat's troubles hold back no other, commands never wait.

The model here is scripted (its words and pace known in advance) and the
service has one place at the model, the worst case for waiting; the real
model writing several replies together is tested in tests/test_batching.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bots.app import App
from core.service import ChatService
from tests.fakes import ScriptedGenerator
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import BOT_USERNAME, FakeBotApi, group_chat, private_chat, user
from tests.telegram.scenario import rated_replies, wait_for_reply, wait_for_text

ADA, BOB, CY, DAN = user(1, "Ada"), user(2, "Bob"), user(3, "Cy"), user(4, "Dan")
ANSWER = "Here is a careful answer, written slowly, piece by piece, for you."


def crowded(app: App, pause_s: float, **chat: Any) -> None:
    """Serve ``app`` with a scripted model taking ``pause_s`` a piece (ten pieces a reply), one at a time."""
    config = app.service.config
    app.service = ChatService(
        app.store,
        app.transcriber,
        ScriptedGenerator(ANSWER, pieces=10, pause_s=pause_s),
        replace(config, parallel_replies=1, chat=replace(config.chat, **chat)),
    )


async def test_a_flood_wait_in_one_chat_does_not_hold_back_another_chats_reply(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    crowded(app, pause_s=0.05)
    await start_bot()
    # Telegram makes Ada's chat wait 6 s at its first edit, in the middle of her reply.
    fake_api.fail("editMessageText", retry_after=6, when=lambda params: params["chat_id"] == ADA["id"])
    fake_api.send_text(private_chat(ADA), ADA, "Tell me something.")
    await fake_api.wait_for(lambda: any(call.status == 429 for call in fake_api.calls_to("editMessageText")))
    fake_api.send_text(private_chat(BOB), BOB, "And me?")

    bobs = await wait_for_reply(fake_api, BOB["id"], timeout=5)
    assert bobs.text == ANSWER
    assert not rated_replies(fake_api, ADA["id"])  # Ada's chat is still waiting out its flood wait
    adas = await wait_for_reply(fake_api, ADA["id"])
    assert adas.text == ANSWER  # and gets the whole reply when it may write again


async def test_a_waiting_reply_shows_its_place_as_it_moves_then_grows_in_that_message(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    crowded(app, pause_s=0.3, queue_notice_seconds=0.0)
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "First question.")
    await fake_api.wait_for(lambda: fake_api.chat(ADA["id"]))  # Ada's reply is being written
    fake_api.send_text(private_chat(BOB), BOB, "Second question.")
    await wait_for_text(fake_api, BOB["id"], "yours is next")
    fake_api.send_text(private_chat(CY), CY, "Third question.")

    await wait_for_text(fake_api, CY["id"], "1 reply ahead of yours")
    reply = await wait_for_reply(fake_api, CY["id"], timeout=30)
    (shown,) = fake_api.chat(CY["id"])  # one message: the place in line became the reply
    assert shown is reply and reply.text == ANSWER
    places = [text for text in reply.texts if text.startswith("⏳")]
    assert places == [
        "⏳ Many people are asking right now: 1 reply ahead of yours.",
        "⏳ Many people are asking right now: yours is next.",
    ]
    assert reply.texts[: len(places)] == places
    assert (await wait_for_reply(fake_api, BOB["id"])).text == ANSWER


async def test_commands_are_answered_while_replies_are_written(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    crowded(app, pause_s=0.3)
    await start_bot()
    for person in (ADA, BOB, CY):
        fake_api.send_text(private_chat(person), person, "A question.")
    await fake_api.wait_for(lambda: fake_api.chat(ADA["id"]))
    fake_api.send_text(private_chat(DAN), DAN, "/help")
    await wait_for_text(fake_api, DAN["id"], "/reset", timeout=5)
    assert not any(rated_replies(fake_api, person["id"]) for person in (BOB, CY))  # still waiting or writing


async def test_one_person_cannot_queue_more_than_their_share(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    crowded(app, pause_s=0.3, max_queued_per_person=1)
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "A question in private.")
    await fake_api.wait_for(lambda: fake_api.chat(ADA["id"]))
    team = group_chat()
    fake_api.send_text(team, ADA, f"@{BOT_USERNAME} and one more in the group")

    refusal = await wait_for_text(fake_api, team["id"], "I am still answering your last message", timeout=5)
    assert not refusal.buttons
    assert (await wait_for_reply(fake_api, ADA["id"])).text == ANSWER
    asked = query(app, "SELECT text FROM turns WHERE role = 'user' ORDER BY id")
    assert asked == [("A question in private.",)]  # the refused one was not stored
