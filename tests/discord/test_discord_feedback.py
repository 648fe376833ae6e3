"""Ratings and corrections through the buttons under a reply, and the admins' slash commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bots.app import App
from bots.discord_bot.components import ADMINS_ONLY, GONE
from core.access import REFUSAL
from core.domain import CorrectionStatus, Person
from core.service import ChatService
from tests.discord.conftest import (
    discord_settings,
    finished_reply,
    running,
    shown,
    stored_ratings,
    stored_turns,
    turn_of,
)
from tests.discord.fake_discord import EPHEMERAL, FakeDiscord, custom_ids
from tests.fakes import HeldRetrainer


async def test_thumbs_up_is_stored_and_a_second_press_changes_it(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "What is the capital of France?", mention_bot=True)
        reply = await finished_reply(fake, sent)
        turn = turn_of(reply)
        up = await fake.press(int(reply["id"]), f"iris:rate:up:{turn}", person)
        assert await shown(fake, up) == ["Thanks for the 👍!"]
        assert stored_ratings(app) == [(turn, person["id"], 1)]
        down = await fake.press(int(reply["id"]), f"iris:rate:down:{turn}", person)
        assert await shown(fake, down) == ["Changed your rating to 👎."]
        again = await fake.press(int(reply["id"]), f"iris:rate:down:{turn}", person)
        assert await shown(fake, again) == ["You already gave this reply a 👎."]

    assert stored_ratings(app) == [(turn, person["id"], -1)]  # one rating per person per reply
    # Deferred first, privately: the answer is ephemeral, the public reply is unchanged.
    assert up.callbacks[0]["type"] == 5 and up.callbacks[0]["data"]["flags"] & EPHEMERAL
    assert fake.messages[up.original_id or 0]["flags"] & EPHEMERAL
    assert fake.revisions[int(reply["id"])][-1] == reply["content"]


async def test_a_correction_written_in_the_form_is_stored_for_review(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "Who wrote Hamlet?", dm=True)
        reply = await finished_reply(fake, sent)
        turn = turn_of(reply)
        opened = await fake.press(int(reply["id"]), f"iris:fix:{turn}", person)
        await fake.wait_for(lambda: opened.modal, 30, "the correction form")
        submitted = await fake.submit(opened, "  William Shakespeare wrote Hamlet.  ")
        [thanks] = await shown(fake, submitted)

    assert "saved" in thanks and "review" in thanks
    [pending] = app.store.corrections(CorrectionStatus.PENDING)
    assert pending.turn_id == turn and pending.text == "William Shakespeare wrote Hamlet."
    assert pending.person.user_id == person["id"]
    assert opened.modal is not None and opened.modal["title"] == "Suggest a better answer"


async def test_buttons_keep_working_after_the_bot_restarts(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    settings = discord_settings(tmp_path, served_gguf, fake)
    async with running(service, settings, fake):
        sent = await fake.post(person, "What is the capital of France?", dm=True)
        reply = await finished_reply(fake, sent)
    async with running(service, settings, fake) as client:
        assert client.is_ready()
        pressed = await fake.press(int(reply["id"]), f"iris:rate:up:{turn_of(reply)}", person)
        assert await shown(fake, pressed) == ["Thanks for the 👍!"]

    assert stored_ratings(app) == [(turn_of(reply), person["id"], 1)]


async def test_a_stranger_cannot_rate_or_correct(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    friend = fake.add_user("friend")
    stranger = fake.add_user("stranger")
    settings = discord_settings(tmp_path, served_gguf, fake, allowed_user_ids=[friend["id"]])
    async with running(service, settings, fake):
        sent = await fake.post(friend, "What is the capital of France?", mention_bot=True)
        reply = await finished_reply(fake, sent)
        turn = turn_of(reply)
        rated = await fake.press(int(reply["id"]), f"iris:rate:up:{turn}", stranger)
        fixing = await fake.press(int(reply["id"]), f"iris:fix:{turn}", stranger)
        assert await shown(fake, rated) == [REFUSAL]
        assert await shown(fake, fixing) == [REFUSAL]

    assert fixing.modal is None
    assert stored_ratings(app) == []
    assert app.store.stats().people == 1


def consent_of(app: App, person: dict[str, Any]) -> bool | None:
    from sqlalchemy import select

    from storage.tables import PersonRow

    with app.store.engine.connect() as connection:
        return connection.scalar(select(PersonRow.consent).where(PersonRow.user_id == str(person["id"])))


async def test_help_reset_and_forget_with_confirmation(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    other = fake.add_user("bea")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        [help_text] = await shown(fake, await fake.command("help", person))
        assert "/forget" in help_text and "👍" in help_text
        assert {c["name"] for c in fake.commands} == {
            "help",
            "reset",
            "forget",
            "consent",
            "voice",
            "stats",
            "ab",
            "review",
            "retrain",
            "audit",
            "persona",
            "settings",
            "language",
        }
        said_no = await shown(fake, await fake.command("consent", person, options={"answer": "no"}))
        assert said_no == ["Understood: your conversations will not be used to train future versions of me."]
        assert consent_of(app, person) is False
        await shown(fake, await fake.command("consent", person, options={"answer": "yes"}))
        assert consent_of(app, person) is True

        first = await fake.post(person, "What is the capital of France?", mention_bot=True)
        await finished_reply(fake, first)
        assert await shown(fake, await fake.command("reset", person)) == ["Started a new conversation."]
        second = await fake.post(person, "What is the capital of Spain?", mention_bot=True)
        reply = await finished_reply(fake, second)
        await fake.press(int(reply["id"]), f"iris:rate:up:{turn_of(reply)}", person)
        await fake.wait_for(lambda: stored_ratings(app), 30, "the rating")
        conversations = [t.conversation_id for t in stored_turns(app) if t.role == "user"]
        assert len(set(conversations)) == 2

        asked = await fake.command("forget", person)
        [question] = await shown(fake, asked)
        assert "Sure?" in question
        confirm = fake.messages[asked.original_id or 0]
        assert custom_ids(confirm) == [f"iris:forget:yes:{person['id']}", f"iris:forget:no:{person['id']}"]
        not_theirs = await fake.press(int(confirm["id"]), f"iris:forget:yes:{person['id']}", other)
        assert "someone else" in (await shown(fake, not_theirs))[0]
        kept = await fake.press(int(confirm["id"]), f"iris:forget:no:{person['id']}", person)
        assert await shown(fake, kept) == ["Nothing was deleted."]
        assert len(stored_turns(app)) == 4

        asked_again = await fake.command("forget", person)
        await shown(fake, asked_again)
        confirm = fake.messages[asked_again.original_id or 0]
        done = await fake.press(int(confirm["id"]), f"iris:forget:yes:{person['id']}", person)
        [report] = await shown(fake, done)

    assert report.startswith("Done: I deleted 4 messages, 1 rating and 0 suggested answers.")
    assert stored_turns(app) == [] and stored_ratings(app) == []
    assert fake.messages[int(confirm["id"])]["components"] == []  # the buttons are gone


async def test_stats_and_review_are_for_admins_and_review_approves_a_correction(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    admin = fake.owner
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        assert await shown(fake, await fake.command("stats", person)) == ["Only the bot's admins can do that."]
        assert await shown(fake, await fake.command("ab", person)) == ["Only the bot's admins can do that."]
        [no_test] = await shown(fake, await fake.command("ab", admin))
        assert no_test.startswith("No A/B test has run yet")
        assert await shown(fake, await fake.command("review", person)) == ["Only the bot's admins can do that."]
        assert await shown(fake, await fake.command("review", admin)) == [
            "No corrections are waiting for review."
        ]

        sent = await fake.post(person, "Who wrote Hamlet?", mention_bot=True)
        reply = await finished_reply(fake, sent)
        opened = await fake.press(int(reply["id"]), f"iris:fix:{turn_of(reply)}", person)
        await fake.wait_for(lambda: opened.modal, 30, "the correction form")
        await shown(fake, await fake.submit(opened, "William Shakespeare wrote Hamlet."))

        [stats] = await shown(fake, await fake.command("stats", admin))
        assert "Replies: 1" in stats and "1 waiting for review" in stats

        review = await fake.command("review", admin)
        heading, card = await shown(fake, review, count=2)
        assert heading.startswith("1 waiting")
        assert "Who wrote Hamlet?" in card and "William Shakespeare wrote Hamlet." in card
        card_message = fake.messages[review.followup_ids[-1]]
        assert card_message["flags"] & EPHEMERAL
        [approve, _reject, _edit] = custom_ids(card_message)
        refused = await fake.press(int(card_message["id"]), approve, person)
        assert await shown(fake, refused) == ["Only the bot's admins can do that."]
        approved = await fake.press(int(card_message["id"]), approve, admin)
        [verdict] = await shown(fake, approved)

    assert "✅ Approved by" in verdict and fake.messages[int(card_message["id"])]["components"] == []
    [correction] = app.store.corrections(CorrectionStatus.APPROVED)
    assert correction.reviewer == f"discord:{admin['id']}"
    assert app.store.corrections(CorrectionStatus.PENDING) == []


async def test_retrain_is_for_admins_runs_once_at_a_time_and_posts_its_result(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    admin = fake.owner
    retrainer = HeldRetrainer()
    service.admin.retrainer = retrainer
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        assert await shown(fake, await fake.command("retrain", person)) == [
            "Only the bot's admins can do that."
        ]
        [started] = await shown(fake, await fake.command("retrain", admin))
        assert started.startswith("Retraining started")
        await fake.wait_for(lambda: retrainer.runs == 1, 30, "the run to start")
        await shown(fake, await fake.command("retrain", admin))
        busy = await fake.wait_for(lambda: fake.bot_messages(), 30, "the busy notice")
        retrainer.release.set()
        posted = await fake.wait_for(lambda: fake.bot_messages()[1:], 30, "the result")

    assert busy[0]["content"] == "A retrain is already running; I did not start another."
    assert posted[0]["content"] == "Promoted iris-ft-1: held-out loss 2.10 → 1.95."
    assert retrainer.runs == 1


async def test_forged_presses_carrying_another_chats_reply_store_nothing(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    ada = fake.add_user("ada")
    eve = fake.add_user("eve")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        ada_reply = await finished_reply(fake, await fake.post(ada, "What is the capital of France?", dm=True))
        eve_reply = await finished_reply(fake, await fake.post(eve, "What is the capital of Spain?", dm=True))
        ada_turn = turn_of(ada_reply)
        correction_id = await service.feedback.correct(
            Person("discord", ada["id"]), ada_turn, "Paris is the capital of France."
        )
        under_eve = int(eve_reply["id"])  # every forged press happens in Eve's DM, under her own reply

        rated = await fake.press(under_eve, f"iris:rate:down:{ada_turn}", eve, forged=True)
        assert await shown(fake, rated) == [GONE]
        opened = await fake.press(under_eve, f"iris:fix:{ada_turn}", eve, forged=True)
        await fake.wait_for(lambda: opened.modal, 30, "the correction form")
        fixed = await fake.submit(opened, "Madrid is the capital of France.")
        assert await shown(fake, fixed) == [GONE]
        reviewed = await fake.press(under_eve, f"iris:review:approve:{correction_id}", eve, forged=True)
        assert await shown(fake, reviewed) == [ADMINS_ONLY]
        forgot = await fake.press(under_eve, f"iris:forget:yes:{ada['id']}", eve, forged=True)
        assert "someone else" in (await shown(fake, forgot))[0]

        # The same reply's own buttons, in the DM where it was shown, still work; so do a thread's.
        own = await fake.press(int(ada_reply["id"]), f"iris:rate:up:{ada_turn}", ada)
        assert await shown(fake, own) == ["Thanks for the 👍!"]
        asked = await fake.post(eve, "Who wrote Hamlet?", channel_id=fake.thread_id, mention_bot=True)
        in_thread = await finished_reply(fake, asked)
        pressed = await fake.press(int(in_thread["id"]), f"iris:rate:up:{turn_of(in_thread)}", eve)
        assert await shown(fake, pressed) == ["Thanks for the 👍!"]

    assert stored_ratings(app) == [(ada_turn, ada["id"], 1), (turn_of(in_thread), eve["id"], 1)]
    [correction] = app.store.corrections(None)
    assert (correction.id, correction.status, correction.person.user_id) == (
        correction_id,
        CorrectionStatus.PENDING,
        ada["id"],
    )
    assert {t.text for t in stored_turns(app) if t.role == "user"} == {
        "What is the capital of France?",
        "What is the capital of Spain?",
        "Who wrote Hamlet?",
    }


async def test_only_admins_can_read_the_audit_trail(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        await shown(fake, await fake.command("consent", person, options={"answer": "yes"}))
        assert await shown(fake, await fake.command("audit", person)) == [ADMINS_ONLY]
        [trail] = await shown(fake, await fake.command("audit", fake.owner))

    assert f" · discord:{person['id']} · consent · discord:{person['id']} · consent=True" in trail
