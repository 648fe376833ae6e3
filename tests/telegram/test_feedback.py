"""Ratings, corrections and their review, /reset, /forget and /stats, pressed and typed in the chat."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bots.app import App
from bots.telegram_bot.feedback import REPLY_GONE, UNKNOWN_BUTTON
from core.access import REFUSAL
from core.domain import Person
from tests.fakes import HeldRetrainer
from tests.telegram.conftest import ADMIN_ID, StartBot, query
from tests.telegram.fake_bot_api import Call, FakeBotApi, Sent, private_chat, user
from tests.telegram.scenario import button, turn_of, wait_for_reply, wait_for_text

ADA = user(1, "Ada")
ADMIN = user(ADMIN_ID, "Grace")
QUESTION = "What is the capital of France?"


async def answered(fake_api: FakeBotApi, person: dict[str, Any] = ADA, count: int = 1) -> Sent:
    """Ask the usual question and wait for the ``count``-th finished reply."""
    fake_api.send_text(private_chat(person), person, QUESTION)
    return await wait_for_reply(fake_api, person["id"], count)


async def test_a_rating_is_acknowledged_stored_and_changed(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    reply = await answered(fake_api)
    turn = turn_of(reply)

    fake_api.press(ADA, reply, button(reply, "👍"))
    await fake_api.wait_for(lambda: reply.buttons[0][0] == "👍 ✓")
    (ack,) = fake_api.calls_to("answerCallbackQuery")
    assert ack.params["text"] == "Thanks for the 👍!"
    assert query(app, "SELECT value FROM ratings WHERE turn_id = ?", turn) == [(1,)]

    fake_api.press(ADA, reply, button(reply, "👎"))
    await fake_api.wait_for(lambda: reply.buttons[1][0] == "👎 ✓")
    assert reply.buttons[0][0] == "👍"
    assert fake_api.calls_to("answerCallbackQuery")[-1].params["text"] == "Changed your rating to 👎."
    assert query(app, "SELECT value FROM ratings WHERE turn_id = ?", turn) == [(-1,)]

    fake_api.press(ADA, reply, button(reply, "👎"))
    await fake_api.wait_for(lambda: len(fake_api.calls_to("answerCallbackQuery")) == 3)
    assert fake_api.calls_to("answerCallbackQuery")[-1].params["text"] == "You already gave this reply a 👎."
    assert query(app, "SELECT count(*) FROM ratings") == [(1,)]


async def test_a_stranger_cannot_rate(start_bot: StartBot, fake_api: FakeBotApi, app: App) -> None:
    await start_bot(allowed_user_ids=["1"])
    reply = await answered(fake_api)
    stranger = user(2, "Eve")
    fake_api.press(stranger, reply, button(reply, "👍"))
    await fake_api.wait_for(lambda: fake_api.calls_to("answerCallbackQuery"))
    assert fake_api.calls_to("answerCallbackQuery")[0].params["text"] == REFUSAL
    assert query(app, "SELECT count(*) FROM ratings") == [(0,)]
    assert query(app, "SELECT count(*) FROM people WHERE user_id = '2'") == [(0,)]


async def test_a_correction_waits_for_review_and_an_admin_approves_it(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    reply = await answered(fake_api)
    fake_api.press(ADA, reply, button(reply, "✏️"))
    prompt = await wait_for_text(fake_api, ADA["id"], "what should I have said?")
    assert prompt.reply_to == reply.message_id
    (ask_call,) = [c for c in fake_api.calls_to("sendMessage") if "what should I have said" in c.params["text"]]
    assert ask_call.params["reply_markup"]["force_reply"] is True

    better = "Paris is the capital of France, and its largest city."
    fake_api.send_text(private_chat(ADA), ADA, better, reply_to=prompt)
    await wait_for_text(fake_api, ADA["id"], "waits for review")
    assert query(app, "SELECT turn_id, text, status FROM corrections") == [(turn_of(reply), better, "pending")]
    assert query(app, "SELECT count(*) FROM turns WHERE role = 'user'") == [(1,)]  # not answered as a question

    fake_api.send_text(private_chat(ADA), ADA, "/review")
    await wait_for_text(fake_api, ADA["id"], "That command is for admins.")

    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    card = await wait_for_text(fake_api, ADMIN_ID, better)
    assert QUESTION in card.text and reply.text in card.text
    fake_api.press(ADMIN, card, button(card, "✅"))
    await wait_for_text(fake_api, ADMIN_ID, "Approved by Grace")
    assert card.buttons == []
    assert query(app, "SELECT status, reviewer FROM corrections") == [("approved", f"telegram:{ADMIN_ID}")]

    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    await wait_for_text(fake_api, ADMIN_ID, "No suggested answers are waiting")


async def test_cancel_leaves_the_correction_and_the_next_message_is_a_question(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    reply = await answered(fake_api)
    fake_api.press(ADA, reply, button(reply, "✏️"))
    await wait_for_text(fake_api, ADA["id"], "what should I have said?")
    fake_api.send_text(private_chat(ADA), ADA, "/cancel")
    await wait_for_text(fake_api, ADA["id"], "Cancelled; nothing was stored.")
    await answered(fake_api, count=2)
    assert query(app, "SELECT count(*) FROM corrections") == [(0,)]


async def test_reset_starts_a_new_conversation(start_bot: StartBot, fake_api: FakeBotApi, app: App) -> None:
    await start_bot()
    await answered(fake_api)
    fake_api.send_text(private_chat(ADA), ADA, "/reset")
    await wait_for_text(fake_api, ADA["id"], "New conversation")
    await answered(fake_api, count=2)
    rows = query(app, "SELECT closed_at IS NOT NULL FROM conversations ORDER BY id")
    assert rows == [(1,), (0,)]


async def test_forget_asks_first_then_deletes_everything_about_the_person(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    reply = await answered(fake_api)
    fake_api.press(ADA, reply, button(reply, "👍"))
    await fake_api.wait_for(lambda: query(app, "SELECT count(*) FROM ratings") == [(1,)])

    fake_api.send_text(private_chat(ADA), ADA, "/forget")
    ask = await wait_for_text(fake_api, ADA["id"], "cannot be undone")
    assert query(app, "SELECT count(*) FROM turns") == [(2,)]  # nothing deleted before the confirmation
    fake_api.press(user(2, "Eve"), ask, button(ask, "Delete"))
    await fake_api.wait_for(lambda: len(fake_api.calls_to("answerCallbackQuery")) == 2)
    assert fake_api.calls_to("answerCallbackQuery")[-1].params["text"] == "This button is for someone else."
    assert query(app, "SELECT count(*) FROM turns") == [(2,)]

    fake_api.press(ADA, ask, button(ask, "Delete"))
    done = await wait_for_text(fake_api, ADA["id"], "Done: I deleted")
    assert done.text.startswith("Done: I deleted 2 messages, 1 rating and 0 suggested answers.")
    for table in ("people", "turns", "ratings", "conversations"):
        assert query(app, f"SELECT count(*) FROM {table}") == [(0,)], table


async def test_stats_are_for_admins(start_bot: StartBot, fake_api: FakeBotApi, app: App) -> None:
    await start_bot()
    reply = await answered(fake_api)
    fake_api.press(ADA, reply, button(reply, "👍"))
    await fake_api.wait_for(lambda: query(app, "SELECT count(*) FROM ratings") == [(1,)])
    fake_api.send_text(private_chat(ADA), ADA, "/stats")
    await wait_for_text(fake_api, ADA["id"], "That command is for admins.")
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/stats")
    stats = await wait_for_text(fake_api, ADMIN_ID, "Active model")
    assert "Messages: 1 (0% voice) from 1 people" in stats.text
    assert "1 replies, 1 👍, 0 👎 (100% 👍)" in stats.text


async def test_presses_faster_than_a_chat_may_be_edited_show_the_last_vote_without_an_edit_each(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    # Telegram's own limits (about one edit a second in a chat, short bursts allowed): twelve
    # presses as fast as they are answered would queue twelve edits, each press's handler holding
    # a slot meant for presses and commands for up to twelve seconds.
    await start_bot()
    reply = await answered(fake_api, ADMIN)  # an admin: no press limit, as in bench/iris_run_crowd.py
    votes = ["👍", "👎"] * 6
    for n, vote in enumerate(votes, 1):
        fake_api.press(ADMIN, reply, button(reply, vote))
        await fake_api.wait_for(lambda n=n: len(fake_api.calls_to("answerCallbackQuery")) == n)  # type: ignore[misc]
    edits: list[Call] = []
    for _ in range(60):  # until no edit came for 3 s (the queued edits of 12 presses take 12 s)
        await asyncio.sleep(3)
        now = [
            c for c in fake_api.calls_to("editMessageReplyMarkup") if c.params["message_id"] == reply.message_id
        ]
        if len(now) == len(edits):
            break
        edits = now
    assert 1 <= len(edits) <= 3, len(edits)  # the first press's edit, then the latest state once
    assert ("👎 ✓", reply.buttons[1][1]) in reply.buttons  # the last vote shows
    assert query(app, "SELECT value FROM ratings WHERE turn_id = ?", turn_of(reply)) == [(-1,)]


async def test_a_rating_and_a_command_are_answered_while_another_reply_streams(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    first = await answered(fake_api)
    fake_api.send_text(private_chat(ADA), ADA, "Write a long story about a dragon who learns to sing.")
    await fake_api.wait_for(lambda: len(fake_api.chat(ADA["id"])) == 2)  # the second reply has begun
    fake_api.press(ADA, first, button(first, "👍"))
    fake_api.send_text(private_chat(ADA), ADA, "/help")
    second = await wait_for_reply(fake_api, ADA["id"], count=2)

    def position(found: Callable[[Call], bool]) -> int:
        return next(i for i, call in enumerate(fake_api.calls) if found(call))

    finished = position(  # the buttons arrive with the last text, or alone when the text was all shown
        lambda c: (
            c.method in ("editMessageText", "editMessageReplyMarkup")
            and c.params["message_id"] == second.message_id
            and "reply_markup" in c.params
        )
    )
    assert position(lambda c: c.method == "answerCallbackQuery") < finished
    assert position(lambda c: c.method == "sendMessage" and "/reset" in c.params["text"]) < finished
    assert query(app, "SELECT value FROM ratings WHERE turn_id = ?", turn_of(first)) == [(1,)]


async def test_retrain_is_for_admins_runs_once_and_posts_its_result(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    retrainer = HeldRetrainer()
    app.service.admin.retrainer = retrainer
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "/retrain")
    await wait_for_text(fake_api, ADA["id"], "That command is for admins.")
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/retrain")
    await wait_for_text(fake_api, ADMIN_ID, "I will post the result here")
    await fake_api.wait_for(lambda: retrainer.runs == 1)
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/retrain")
    await wait_for_text(fake_api, ADMIN_ID, "already running")
    retrainer.release.set()
    result = await wait_for_text(fake_api, ADMIN_ID, "Promoted iris-ft-1")
    assert result.text == HeldRetrainer.SUMMARY and retrainer.runs == 1


async def test_consent_is_asked_for_and_recorded(start_bot: StartBot, fake_api: FakeBotApi, app: App) -> None:
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "/consent")
    await wait_for_text(fake_api, ADA["id"], "Send /consent yes")
    fake_api.send_text(private_chat(ADA), ADA, "/consent no")
    await wait_for_text(fake_api, ADA["id"], "will not be used to train")
    assert query(app, "SELECT consent FROM people WHERE user_id = ?", str(ADA["id"])) == [(0,)]
    fake_api.send_text(private_chat(ADA), ADA, "/consent YES")
    await wait_for_text(fake_api, ADA["id"], "may now help train")
    assert query(app, "SELECT consent FROM people WHERE user_id = ?", str(ADA["id"])) == [(1,)]


async def test_forged_presses_carrying_another_chats_reply_store_nothing(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    eve = user(2, "Eve")
    ada_reply = await answered(fake_api)
    eve_reply = await answered(fake_api, eve)
    ada_turn = turn_of(ada_reply)
    correction_id = await app.service.feedback.correct(
        Person("telegram", str(ADA["id"])), ada_turn, "Paris, of course."
    )

    def acks() -> list[str]:
        return [call.params.get("text", "") for call in fake_api.calls_to("answerCallbackQuery")]

    # A modified client: each press is under Eve's own reply, in her chat, with another reply's data.
    forged = [
        f"rate:{ada_turn}:down",
        f"fix:{ada_turn}",
        f"review:{correction_id}:approve",
        f"forget:{ADA['id']}:yes",
        "x" * 64,  # no button of Iris carries these: answered all the same, so the client stops waiting
        f"rate:{ada_turn}:sideways",
    ]
    for data in forged:
        fake_api.press(eve, eve_reply, data)
    await fake_api.wait_for(lambda: len(acks()) == len(forged))
    assert sorted(acks()) == sorted(
        [
            REPLY_GONE,
            REPLY_GONE,
            "Only admins can review suggested answers.",
            "This button is for someone else.",
            UNKNOWN_BUTTON,
            UNKNOWN_BUTTON,
        ]
    )
    await fake_api.settle(0.5)
    assert not [m for m in fake_api.chat(eve["id"]) if "what should I have said" in m.text]
    fake_api.send_text(private_chat(eve), eve, "Madrid is the capital of France.")  # not taken as a correction
    await wait_for_reply(fake_api, eve["id"], 2)

    fake_api.press(ADA, ada_reply, button(ada_reply, "👍"))  # the real button, in Ada's chat, still works
    await fake_api.wait_for(lambda: len(acks()) == len(forged) + 1)
    assert query(app, "SELECT turn_id, value FROM ratings") == [(ada_turn, 1)]
    assert query(app, "SELECT id, status FROM corrections") == [(correction_id, "pending")]
    assert query(app, "SELECT count(*) FROM people") == [(2,)]


async def test_only_admins_can_read_the_audit_trail(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "/consent yes")
    await wait_for_text(fake_api, ADA["id"], "may now help train")
    fake_api.send_text(private_chat(ADA), ADA, "/audit")
    await wait_for_text(fake_api, ADA["id"], "That command is for admins.")
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/audit")
    trail = await wait_for_text(fake_api, ADMIN_ID, " · consent · ")
    assert f" · telegram:{ADA['id']} · consent · telegram:{ADA['id']} · consent=True" in trail.text
    assert not [m for m in fake_api.chat(ADA["id"]) if " · consent · " in m.text]
