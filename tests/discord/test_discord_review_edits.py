"""An admin edits a correction in a Discord form before approving it; a reject keeps it out of training.

The real discord.py client on the fake Discord, with real SQLite; what is checked is what the
admin sees, what is stored, and what ``iris feedback export`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bots.app import App, database_url
from bots.discord_bot.components import ADMINS_ONLY, ALREADY_DECIDED
from bots.discord_bot.review import EDIT_EMPTY
from core.domain import AuditAction, ChatRef, CorrectionStatus, Person, Timings
from core.service import ChatService
from finetune.feedback import export_feedback
from tests.discord.conftest import discord_settings, running, shown
from tests.discord.fake_discord import FakeDiscord, Interaction, Json, custom_ids

QUESTION = "What is the capital of France?"
PROPOSED = "Madrid, obviously."
EDITED = "Paris is the capital of France."


def ada_corrects(app: App, fake: FakeDiscord, ada: Json, text: str) -> int:
    """Ada asked in her DM and suggested ``text`` as the better answer; its id."""
    person = Person("discord", ada["id"], "ada")
    receipt = app.store.record_user_turn(
        ChatRef("discord", str(fake.dm_channel(ada))),
        person,
        text=QUESTION,
        from_voice=False,
        message_id=None,
        shared_history=False,
    )
    reply = app.store.record_reply(receipt.conversation_id, receipt.turn_id, "Lyon.", "m1", Timings())
    return app.store.add_correction(person, reply, text)


async def review_card(fake: FakeDiscord, admin: Json) -> Json:
    """The one pending correction's card, as /review shows it to the admin."""
    review = await fake.command("review", admin)
    await shown(fake, review, count=2)
    card: Json = fake.messages[review.followup_ids[-1]]
    return card


def form_input(opened: Interaction) -> Json:
    """The text input of the form the bot opened (inside a label or an action row)."""
    assert opened.modal is not None
    for component in opened.modal["components"]:
        inner: list[Any] = [component.get("component") or {}, *component.get("components", [])]
        for candidate in [component, *inner]:
            if candidate.get("type") == 4:
                return dict(candidate)
    raise AssertionError(f"no text input in {opened.modal}")


def export(app: App, out: Path) -> tuple[list[str], str]:
    """What ``iris feedback export`` writes: the answers its SFT rows teach, and all its rows as one text."""
    export_feedback(database_url(app.settings), out)
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines() if line]
    everything = "\n".join((out / name).read_text() for name in ("sft.jsonl", "dpo.jsonl", "kto.jsonl"))
    return [row["conversations"][-1]["value"] for row in rows], everything


async def test_an_admin_edits_a_correction_in_a_form_and_the_export_holds_the_edited_text(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    ada, admin = fake.add_user("ada"), fake.owner
    correction_id = ada_corrects(app, fake, ada, PROPOSED)
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        card = await review_card(fake, admin)
        card_id = int(card["id"])
        [_approve, _reject, edit] = custom_ids(card)
        assert edit == f"iris:review:edit:{correction_id}"

        refused = await fake.press(card_id, edit, ada)
        assert await shown(fake, refused) == [ADMINS_ONLY] and refused.modal is None

        opened = await fake.press(card_id, edit, admin)
        await fake.wait_for(lambda: opened.modal, 30, "the edit form")
        field = form_input(opened)
        assert field["value"] == PROPOSED and field["style"] == 2 and field["max_length"] <= 4000

        assert await shown(fake, await fake.submit(opened, "   ")) == [EDIT_EMPTY]
        assert await shown(fake, await fake.submit(opened, EDITED, user=ada)) == [ADMINS_ONLY]
        assert [c.text for c in app.store.corrections(CorrectionStatus.PENDING)] == [PROPOSED]

        submitted = await fake.submit(opened, EDITED)
        approved = await fake.wait_for(
            lambda: next((t for t in submitted.shown if "Edited and ✅ approved" in t), None), 30, "the verdict"
        )
        assert EDITED in approved and QUESTION in approved
        assert fake.messages[card_id]["components"] == []  # the card's buttons are gone

        # The same form sent again is a second decision: it says so and changes nothing.
        again = await fake.submit(opened, "Rome.")
        assert await shown(fake, again) == [ALREADY_DECIDED.format(id=correction_id)]

    [correction] = app.store.corrections(CorrectionStatus.APPROVED)
    assert correction.text == EDITED and correction.reviewer == f"discord:{admin['id']}"
    trail = [(e.action, e.target) for e in await app.service.admin.audit_trail()]
    assert (AuditAction.REVIEW_EDIT, f"correction:{correction_id}") in trail
    taught, everything = export(app, tmp_path / "export")
    assert taught == [EDITED] and PROPOSED not in everything


async def test_a_reject_press_keeps_the_correction_out_of_the_export(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    ada, admin = fake.add_user("ada"), fake.owner
    correction_id = ada_corrects(app, fake, ada, PROPOSED)
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        card = await review_card(fake, admin)
        card_id = int(card["id"])
        [_approve, reject, edit] = custom_ids(card)
        [verdict] = await shown(fake, await fake.press(card_id, reject, admin))
        assert "❌ Rejected by" in verdict and fake.messages[card_id]["components"] == []
        # An edit button kept from the card (a client may still show it) cannot bring it back.
        late = await fake.press(card_id, edit, admin, forged=True)
        assert await shown(fake, late) == [ALREADY_DECIDED.format(id=correction_id)] and late.modal is None

    [correction] = app.store.corrections(CorrectionStatus.REJECTED)
    assert correction.text == PROPOSED and correction.reviewer == f"discord:{admin['id']}"
    taught, everything = export(app, tmp_path / "export")
    assert taught == [] and PROPOSED not in everything
