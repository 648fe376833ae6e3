"""Getting replies through: flood control, network drops, long replies, rejected formatting, webhooks."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import Bot

from bots.app import App
from bots.delivery import ReplyStream
from bots.telegram_bot.outbox import Outbox, Target
from bots.telegram_bot.streaming import TelegramChat
from core.domain import Notice, NoticeKind, Queued, ReplyDelta, ReplyDone, ServiceEvent, Timings
from tests.telegram.conftest import StartBot, query
from tests.telegram.fake_bot_api import TOKEN, FakeBotApi, private_chat, user
from tests.telegram.scenario import rated_replies, wait_for_reply

ADA = user(1, "Ada")
# PTB itself reads RetryAfter.retry_after when building the error, which warns in v22.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


async def test_flood_control_in_the_middle_of_streaming_is_waited_out(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.fail("editMessageText", retry_after=1)  # the first edit of the growing reply
    fake_api.send_text(private_chat(ADA), ADA, "Tell me about the Eiffel Tower.")
    reply = await wait_for_reply(fake_api, ADA["id"])

    edits = fake_api.calls_to("editMessageText")
    assert edits[0].status == 429 and "reply_markup" not in edits[0].params  # mid-stream, not the final edit
    assert edits[1:] and {edit.status for edit in edits[1:]} == {200}
    # The refused edit was repeated, not dropped: the message ends as the stored reply.
    (stored,) = query(app, "SELECT text FROM turns WHERE role = 'assistant'")
    assert reply.text == stored[0]
    assert len(fake_api.chat(ADA["id"])) == 1


async def test_a_reply_the_chat_refuses_is_still_stored(
    start_bot: StartBot, fake_api: FakeBotApi, app: App
) -> None:
    await start_bot()
    fake_api.fail("sendMessage", status=403, description="Forbidden: bot was blocked by the user", times=99)
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    stored = "SELECT count(*) FROM turns WHERE role = 'assistant' AND text != ''"
    await fake_api.wait_for(lambda: query(app, stored) == [(1,)])
    assert fake_api.chat(ADA["id"]) == [] and fake_api.calls_to("sendMessage")


async def test_a_network_drop_while_polling_is_retried(start_bot: StartBot, fake_api: FakeBotApi) -> None:
    fake_api.fail("getUpdates", status=502, times=2)
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "What is the capital of France?")
    await wait_for_reply(fake_api, ADA["id"])
    statuses = [call.status for call in fake_api.calls_to("getUpdates")]
    assert statuses[:2] == [502, 502] and 200 in statuses


async def _events(text: str, turn_id: int) -> AsyncIterator[ServiceEvent]:
    """A reply arriving in 500-character steps, as ``service.replies.handle`` yields it."""
    for end in range(500, len(text) + 500, 500):
        yield ReplyDelta(text[:end], text[end - 500 : end])
    yield ReplyDone(turn_id, text, "test-model", Timings())


async def _render(fake_api: FakeBotApi, text: str, turn_id: int = 7) -> None:
    async with Bot(TOKEN, base_url=fake_api.base_url, base_file_url=fake_api.base_file_url) as bot:
        stream = ReplyStream(TelegramChat(Outbox(bot), Target(ADA["id"])), edit_interval_s=0.0)
        done = await stream.render(_events(text, turn_id))
    assert done is not None and done.turn_id == turn_id


async def test_a_reply_over_4096_characters_continues_in_further_messages(fake_api: FakeBotApi) -> None:
    paragraphs = [
        f"Part {n}. " + " ".join(f"Sentence {n}.{i} says a little more." for i in range(40)) for n in range(8)
    ]
    text = "\n\n".join(paragraphs)
    assert len(text) > 2 * 4096
    await _render(fake_api, text)

    shown = fake_api.chat(ADA["id"])
    assert len(shown) == 3 and all(len(sent.text) <= 4096 for sent in shown)
    assert all(sent.text.startswith("Part ") for sent in shown)  # cut at paragraph boundaries
    assert " ".join(sent.text for sent in shown).split() == text.split()  # nothing lost
    assert [bool(sent.buttons) for sent in shown] == [False, False, True]
    assert rated_replies(fake_api, ADA["id"]) == [shown[-1]]


async def test_buttons_join_a_reply_already_fully_shown_without_redrawing_its_text(
    fake_api: FakeBotApi,
) -> None:
    # The last piece streamed is the whole reply, so the finish only adds the buttons.
    text = "Short answer. " * 60
    await _render(fake_api, text)

    (shown,) = fake_api.chat(ADA["id"])
    assert shown.text == text.strip() and shown.buttons
    assert all(earlier != later for earlier, later in zip(shown.texts, shown.texts[1:], strict=False))
    assert [call.status for call in fake_api.calls_to("editMessageReplyMarkup")] == [200]


async def test_markdown_is_formatted_and_markup_telegram_rejects_falls_back_to_plain_text(
    fake_api: FakeBotApi,
) -> None:
    await _render(fake_api, "Use **bold** and `code`.", turn_id=1)
    (formatted,) = fake_api.chat(ADA["id"])
    assert formatted.html == "Use <b>bold</b> and <code>code</code>."
    assert formatted.text == "Use bold and code."

    # The parser always nests its tags, so crossed markers no longer make broken HTML:
    # Telegram is made to refuse the markup instead, for every call that carries some.
    refused = "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 2"
    for method in ("sendMessage", "editMessageText"):
        fake_api.fail(method, status=400, description=refused, times=99, when=lambda p: "parse_mode" in p)
    crossed = "A **crossed *pair** of markers* here."
    await _render(fake_api, crossed, turn_id=2)
    plain = fake_api.chat(ADA["id"])[-1]
    assert plain.text == crossed and plain.html is None and plain.buttons
    assert any(call.status == 400 for call in fake_api.calls_to("sendMessage"))


async def test_a_notice_takes_the_place_of_a_reply_that_broke_off(fake_api: FakeBotApi) -> None:
    sorry = "Sorry, I could not come up with a reply just now. Please try again."

    async def events() -> AsyncIterator[ServiceEvent]:
        yield Queued(0)
        yield ReplyDelta("The capital of", "The capital of")
        yield Notice(NoticeKind.MODEL_FAILED, sorry, 3)

    async with Bot(TOKEN, base_url=fake_api.base_url, base_file_url=fake_api.base_file_url) as bot:
        stream = ReplyStream(TelegramChat(Outbox(bot), Target(ADA["id"])), edit_interval_s=0.0)
        assert await stream.render(events()) is None

    (shown,) = fake_api.chat(ADA["id"])  # the place in line, then the partial reply, then the notice
    assert shown.texts == [Queued(0).text(), "The capital of", sorry] and not shown.buttons


async def test_a_finished_reply_that_could_not_be_saved_stays_whole_with_the_notice_below(
    fake_api: FakeBotApi,
) -> None:
    unsaved = "I answered, but could not save the answer, so it cannot be rated."

    async def events() -> AsyncIterator[ServiceEvent]:
        yield ReplyDelta("Paris is", "Paris is")
        yield ReplyDelta("Paris is the capital of France.", " the capital of France.")
        yield Notice(NoticeKind.STORE_FAILED, unsaved, 3)

    async with Bot(TOKEN, base_url=fake_api.base_url, base_file_url=fake_api.base_file_url) as bot:
        stream = ReplyStream(TelegramChat(Outbox(bot), Target(ADA["id"])), edit_interval_s=60.0)
        assert await stream.render(events()) is None

    reply, notice = fake_api.chat(ADA["id"])  # the paced-out last words are shown before the notice
    assert reply.text == "Paris is the capital of France." and not reply.buttons
    assert notice.text == unsaved


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_mode_registers_and_checks_its_secret(start_bot: StartBot, fake_api: FakeBotApi) -> None:
    port = _free_port()
    await start_bot(
        telegram_webhook_url="https://bot.example.com/telegram/hook",
        telegram_webhook_secret="s3cret-Token_1",
        telegram_webhook_listen="127.0.0.1",
        telegram_webhook_port=port,
    )
    assert fake_api.webhook is not None
    assert fake_api.webhook["url"] == "https://bot.example.com/telegram/hook"
    assert fake_api.webhook["secret_token"] == "s3cret-Token_1"
    assert fake_api.calls_to("getUpdates") == []

    def update(update_id: int, text: str) -> str:
        message = fake_api.message(private_chat(ADA), ADA, text=text)
        return json.dumps({"update_id": update_id, "message": message})

    hook = f"http://127.0.0.1:{port}/telegram/hook"
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        forged = {**headers, "X-Telegram-Bot-Api-Secret-Token": "guess"}
        async with http.post(hook, data=update(1, "Say something rude."), headers=forged) as response:
            assert response.status == 403
        genuine = {**headers, "X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"}
        async with http.post(
            hook, data=update(2, "What is the capital of France?"), headers=genuine
        ) as response:
            assert response.status == 200
    reply = await wait_for_reply(fake_api, ADA["id"])
    await fake_api.settle()
    assert reply.text.strip() and len(fake_api.chat(ADA["id"])) == 1


async def test_a_webhook_secret_telegram_would_refuse_stops_the_start(
    start_bot: StartBot, fake_api: FakeBotApi
) -> None:
    with pytest.raises(ValueError, match="TELEGRAM_WEBHOOK_SECRET"):
        await start_bot(
            telegram_webhook_url="https://bot.example.com/hook",
            telegram_webhook_secret="not allowed!",
            telegram_webhook_port=_free_port(),
        )
    assert fake_api.webhook is None
