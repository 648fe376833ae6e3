"""🔁 another answer in Telegram: the real PTB client against the fake Bot API, the bundled model writing both.

Two samples of a small model can come out the same (then no pair is stored and 🔁 may be
pressed again): ``second_answer`` presses until a pair is shown. Its words are never asserted.
"""

from __future__ import annotations

from typing import Any

from bots.app import App
from bots.render import CHOICE_QUESTION
from bots.telegram_bot.again import WRITING
from bots.telegram_bot.feedback import REPLY_GONE
from core.choices import ALREADY, NOT_YOURS, SAME, UNKNOWN
from core.limits import RateLimits
from tests.telegram.conftest import ADMIN_ID, StartBot, query
from tests.telegram.fake_bot_api import FakeBotApi, Sent, private_chat, user
from tests.telegram.scenario import button, turn_of, wait_for_reply

ADA = user(1, "Ada")
EVE = user(2, "Eve")
QUESTION = "Tell me about the sea."


def acks(fake_api: FakeBotApi) -> list[str]:
    return [call.params.get("text", "") for call in fake_api.calls_to("answerCallbackQuery")]


def notes(fake_api: FakeBotApi, chat_id: int) -> list[Sent]:
    """The bot's messages that end a 🔁: a pair to choose from, or why there is none."""
    return [
        sent for sent in fake_api.chat(chat_id) if sent.text.startswith(CHOICE_QUESTION) or sent.text == SAME
    ]


async def second_answer(fake_api: FakeBotApi, reply: Sent, person: dict[str, Any] = ADA) -> Sent:
    """Press 🔁 under ``reply`` until the pair is shown (equal samples are answered ``SAME``)."""
    for tries in range(4):
        fake_api.press(person, reply, button(reply, "🔁"))
        await fake_api.wait_for(lambda: len(notes(fake_api, person["id"])) > tries, 120)  # noqa: B023
        last = notes(fake_api, person["id"])[-1]
        if last.text.startswith(CHOICE_QUESTION):
            return last
    raise AssertionError("four samples all came out the same")


async def test_another_answer_is_shown_beside_the_first_and_only_the_asker_picks(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, QUESTION)
    reply = await wait_for_reply(fake_api, ADA["id"])
    assert [label for label, _ in reply.buttons][:3] == ["👍", "👎", "🔁"]
    turn = turn_of(reply)

    card = await second_answer(fake_api, reply)
    assert acks(fake_api)[0] == WRITING  # answered at once, before the model wrote anything
    assert card.reply_to == reply.message_id
    assert [label for label, _ in card.buttons] == ["1", "2", "Neither"]
    first_shown, second_shown = card.text.removeprefix(f"{CHOICE_QUESTION}\n\n1: ").split("\n\n2: ")
    assert first_shown == reply.text.strip()
    ((second, chosen),) = query(app, "SELECT second_text, choice FROM answer_choices WHERE turn_id = ?", turn)
    assert second_shown == second.strip() and chosen is None
    assert second.strip() != reply.text.strip()
    # The second answer is no turn: the conversation holds the question and the first reply only.
    assert query(app, "SELECT count(*) FROM turns") == [(2,)]

    fake_api.press(ADA, reply, button(reply, "🔁"))
    await fake_api.wait_for(lambda: acks(fake_api)[-1] == ALREADY)
    assert query(app, "SELECT count(*) FROM answer_choices") == [(1,)]

    fake_api.press(EVE, card, button(card, "2"))  # someone else's pick
    await fake_api.wait_for(lambda: acks(fake_api)[-1] == NOT_YOURS)
    assert query(app, "SELECT choice FROM answer_choices") == [(None,)]

    fake_api.press(ADA, card, button(card, "2"))
    await fake_api.wait_for(lambda: card.buttons[1][0] == "2 ✓")
    assert acks(fake_api)[-1] == "Thanks! You chose answer 2."
    assert query(app, "SELECT choice FROM answer_choices") == [("second",)]
    fake_api.press(ADA, card, button(card, "Neither"))  # changed until an export used it
    await fake_api.wait_for(lambda: card.buttons[2][0] == "Neither ✓")
    assert card.buttons[1][0] == "2"
    assert query(app, "SELECT choice FROM answer_choices") == [("neither",)]


async def test_forged_and_unknown_presses_are_answered_and_change_nothing(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, QUESTION)
    ada_reply = await wait_for_reply(fake_api, ADA["id"])
    fake_api.send_text(private_chat(EVE), EVE, QUESTION)
    eve_reply = await wait_for_reply(fake_api, EVE["id"])
    card = await second_answer(fake_api, ada_reply)
    pair = query(app, "SELECT id FROM answer_choices")[0][0]
    before = len(acks(fake_api))

    # A modified client: under Eve's own reply, in her chat, with data naming Ada's reply and pair.
    forged = [f"again:{turn_of(ada_reply)}", f"pick:{pair}:1", "pick:999999:2", "again:999999"]
    for data in forged:
        fake_api.press(EVE, eve_reply, data)
    await fake_api.wait_for(lambda: len(acks(fake_api)) == before + len(forged))
    assert sorted(acks(fake_api)[before:]) == sorted([REPLY_GONE, UNKNOWN, UNKNOWN, REPLY_GONE])
    assert query(app, "SELECT turn_id, choice FROM answer_choices") == [(turn_of(ada_reply), None)]
    assert card.buttons[0][0] == "1"


async def test_asking_for_other_answers_past_the_hourly_limit_is_refused(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    # Counted in the database, as the composition root counts them (every process alike).
    app.service.limiter.limits = RateLimits(again_per_hour=1)
    app.service.limiter.exempt = frozenset({str(ADMIN_ID)})
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, QUESTION)
    first = await wait_for_reply(fake_api, ADA["id"])
    fake_api.send_text(private_chat(ADA), ADA, "And about rivers?")
    second = await wait_for_reply(fake_api, ADA["id"], 2)
    fake_api.press(ADA, first, button(first, "🔁"))
    await fake_api.wait_for(lambda: WRITING in acks(fake_api))
    fake_api.press(ADA, second, button(second, "🔁"))
    await fake_api.wait_for(lambda: len(acks(fake_api)) == 2)
    assert acks(fake_api)[1].startswith(
        "You have asked for 1 other answer in the last hour, my limit per person."
    )
    await fake_api.wait_for(lambda: notes(fake_api, ADA["id"]), 120)
    assert query(app, "SELECT turn_id FROM answer_choices WHERE turn_id = ?", turn_of(second)) == []
    assert query(app, "SELECT count(*) FROM limit_events WHERE kind = 'again'") == [(1,)]
