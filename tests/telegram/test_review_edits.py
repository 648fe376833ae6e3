"""An admin edits a suggested answer in the chat before approving it; a reject keeps it out of training.

Through the real python-telegram-bot application on the fake Bot API, with real SQLite; what is
checked is what the admin sees, what is stored, and what ``iris feedback export`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bots.app import App, database_url
from core.domain import AuditAction, ChatRef, Person, Timings
from finetune.feedback import export_feedback
from tests.telegram.conftest import ADMIN_ID, StartBot, query
from tests.telegram.fake_bot_api import BOT_USER, BOT_USERNAME, FakeBotApi, Sent, private_chat, user
from tests.telegram.scenario import button, wait_for_text

ADA = user(1, "Ada")
ADMIN = user(ADMIN_ID, "Grace")
QUESTION = "What is the capital of France?"
PROPOSED = "Madrid, obviously."
EDITED = "Paris is the capital of France."
ONLY_ADMINS = "Only admins can review suggested answers."
LONG = " ".join(["The Seine flows through Paris."] * 9)  # 278 characters


def ada_corrects(app: App, text: str) -> int:
    """Ada asked in her private chat and suggested ``text`` as the better answer; its id."""
    ada = Person("telegram", str(ADA["id"]), "Ada")
    receipt = app.store.record_user_turn(
        ChatRef("telegram", str(ADA["id"])),
        ada,
        text=QUESTION,
        from_voice=False,
        message_id=None,
        shared_history=False,
    )
    reply = app.store.record_reply(receipt.conversation_id, receipt.turn_id, "Lyon.", "m1", Timings())
    return app.store.add_correction(ada, reply, text)


def with_inline_mode(api: FakeBotApi) -> None:
    """The bot as BotFather's /setinline leaves it: getMe says it takes inline queries."""

    async def get_me(params: dict[str, Any]) -> dict[str, Any]:
        return {**BOT_USER, "can_join_groups": True, "supports_inline_queries": True}

    api._api_getMe = get_me  # type: ignore[method-assign]


def edit_button(card: Sent) -> dict[str, Any]:
    rows = (card.reply_markup or {}).get("inline_keyboard", [])
    button: dict[str, Any] = next(b for row in rows for b in row if b["text"].startswith("✏️"))
    return button


def export(app: App, out: Path) -> tuple[list[str], str]:
    """What ``iris feedback export`` writes: the answers its SFT rows teach, and all its rows as one text."""
    export_feedback(database_url(app.settings), out)
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines() if line]
    everything = "\n".join((out / name).read_text() for name in ("sft.jsonl", "dpo.jsonl", "kto.jsonl"))
    return [row["conversations"][-1]["value"] for row in rows], everything


async def test_an_admin_edits_in_the_input_field_and_the_export_holds_the_edited_text(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path
) -> None:
    with_inline_mode(fake_api)
    await start_bot()
    correction_id = ada_corrects(app, PROPOSED)
    long_id = ada_corrects(app, LONG)
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    await fake_api.wait_for(lambda: sum(bool(m.buttons) for m in fake_api.chat(ADMIN_ID)) == 2)
    card = await wait_for_text(fake_api, ADMIN_ID, PROPOSED)
    filled_in = edit_button(card)["switch_inline_query_current_chat"]
    assert filled_in == f"fix {correction_id}: {PROPOSED}"
    # Past an inline query's 256 characters, ✏️ Edit asks for a reply instead.
    long_card = await wait_for_text(fake_api, ADMIN_ID, LONG)
    assert edit_button(long_card)["callback_data"] == f"review:{long_id}:edit"

    # Someone who is not an admin cannot approve by typing what the button fills in.
    fake_api.send_text(private_chat(ADA), ADA, f"@{BOT_USERNAME} fix {correction_id}: {EDITED}")
    await wait_for_text(fake_api, ADA["id"], ONLY_ADMINS)
    # Nor can an admin approve nothing.
    fake_api.send_text(private_chat(ADMIN), ADMIN, f"@{BOT_USERNAME} fix {correction_id}:   ")
    await wait_for_text(fake_api, ADMIN_ID, "The edited answer is empty")
    assert query(app, "SELECT text, status FROM corrections WHERE id = ?", correction_id) == [
        (PROPOSED, "pending")
    ]

    # The admin's client puts "@bot fix N: <text>" in the input field; the admin changes the text.
    typed = f"@{BOT_USERNAME} {filled_in.replace(PROPOSED, EDITED)}"
    fake_api.send_text(private_chat(ADMIN), ADMIN, typed)
    approved = await wait_for_text(fake_api, ADMIN_ID, "Edited and ✅ approved by Grace")
    assert EDITED in approved.text and QUESTION in approved.text
    assert query(app, "SELECT text, status, reviewer FROM corrections WHERE id = ?", correction_id) == [
        (EDITED, "approved", f"telegram:{ADMIN_ID}")
    ]
    assert query(app, "SELECT count(*) FROM turns WHERE role = 'user'") == [(2,)]  # the two seeded: not asked
    trail = [(e.action, e.target) for e in await app.service.admin.audit_trail()]
    assert (AuditAction.REVIEW_EDIT, f"correction:{correction_id}") in trail

    # The card's buttons still show; a second decision says so and changes nothing.
    fake_api.press(ADMIN, card, button(card, "❌"))
    await fake_api.wait_for(lambda: fake_api.calls_to("answerCallbackQuery"))
    [answer] = fake_api.calls_to("answerCallbackQuery")
    assert "already reviewed" in answer.params["text"]
    fake_api.send_text(private_chat(ADMIN), ADMIN, f"@{BOT_USERNAME} fix {correction_id}: Rome.")
    await wait_for_text(fake_api, ADMIN_ID, f"#{correction_id} was already reviewed")
    # A forged id gets the same answer, the largest the database holds too: nothing is stored.
    for forged in (99999, 10**18 - 1):
        fake_api.send_text(private_chat(ADMIN), ADMIN, f"@{BOT_USERNAME} fix {forged}: Rome.")
        await wait_for_text(fake_api, ADMIN_ID, f"#{forged} was already reviewed, or no longer exists")
    assert query(app, "SELECT text, status FROM corrections WHERE id = ?", correction_id) == [
        (EDITED, "approved")
    ]

    taught, everything = export(app, tmp_path / "export")
    assert taught == [EDITED] and PROPOSED not in everything


async def test_without_inline_mode_the_admin_edits_in_a_reply_to_a_prompt_quoting_the_text(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path
) -> None:
    await start_bot()  # the fake's getMe, like BotFather's default, has inline mode off
    correction_id = ada_corrects(app, PROPOSED)
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    card = await wait_for_text(fake_api, ADMIN_ID, PROPOSED)
    assert edit_button(card)["callback_data"] == f"review:{correction_id}:edit"

    fake_api.press(ADA, card, button(card, "✏️"))  # a forged press by someone else
    await fake_api.wait_for(lambda: fake_api.calls_to("answerCallbackQuery"))
    assert fake_api.calls_to("answerCallbackQuery")[-1].params["text"] == ONLY_ADMINS

    fake_api.press(ADMIN, card, button(card, "✏️"))
    prompt = await wait_for_text(fake_api, ADMIN_ID, "reply to this message")
    assert PROPOSED in prompt.text and f"<pre>{PROPOSED}</pre>" in (prompt.html or "")
    [asked] = [c for c in fake_api.calls_to("sendMessage") if "reply to this message" in c.params["text"]]
    assert asked.params["reply_markup"]["force_reply"] is True

    fake_api.send_text(private_chat(ADMIN), ADMIN, EDITED, reply_to=prompt)
    approved = await wait_for_text(fake_api, ADMIN_ID, "Edited and ✅ approved by Grace")
    assert EDITED in approved.text
    assert query(app, "SELECT text, status FROM corrections") == [(EDITED, "approved")]
    assert query(app, "SELECT count(*) FROM turns WHERE role = 'user'") == [(1,)]
    taught, everything = export(app, tmp_path / "export")
    assert taught == [EDITED] and PROPOSED not in everything


async def test_a_reject_press_keeps_the_suggested_answer_out_of_the_export(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, tmp_path: Path
) -> None:
    with_inline_mode(fake_api)
    await start_bot()
    correction_id = ada_corrects(app, PROPOSED)
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    card = await wait_for_text(fake_api, ADMIN_ID, PROPOSED)

    fake_api.press(ADMIN, card, button(card, "❌"))
    await wait_for_text(fake_api, ADMIN_ID, "❌ Rejected by Grace")
    assert card.buttons == []
    assert query(app, "SELECT status, reviewer FROM corrections") == [("rejected", f"telegram:{ADMIN_ID}")]
    # An edit typed from the card's earlier text does not bring it back.
    fake_api.send_text(private_chat(ADMIN), ADMIN, f"@{BOT_USERNAME} fix {correction_id}: {EDITED}")
    await wait_for_text(fake_api, ADMIN_ID, "was already reviewed")
    assert query(app, "SELECT text, status FROM corrections") == [(PROPOSED, "rejected")]

    taught, everything = export(app, tmp_path / "export")
    assert taught == [] and PROPOSED not in everything and EDITED not in everything
