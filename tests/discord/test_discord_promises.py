"""What the README promises a Discord channel, shown through the real discord.py client on the fake Discord.

The conversation reaches the model (and only the person's own, and not past /reset); admins
pass every allowlist; "typing" stays up while a reply waits; a reviewer's Reject rejects; a
code block cut between messages stays a code block.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from markdown_it import MarkdownIt

from bots.app import App
from core.access import REFUSAL
from core.domain import ChatMessage, CorrectionStatus
from core.service import ChatService
from tests.discord.conftest import discord_settings, finished_reply, first_answer, running, shown, turn_of
from tests.discord.fake_discord import FakeDiscord, Json, custom_ids
from tests.fakes import RecordingGenerator, ScriptedGenerator

NOTED = "Noted, thank you."
LIMIT = 2000


def said(prompt: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """The conversation part of a prompt: (role, text) of every turn, without a system prompt."""
    return [(message.role, message.content) for message in prompt if message.role != "system"]


async def test_earlier_turns_reach_the_model_but_not_another_persons_and_not_after_reset(
    fake: FakeDiscord, service: ChatService, tmp_path: Path, served_gguf: Path
) -> None:
    model = RecordingGenerator(NOTED)
    service.writer.generator = model
    ada, bob = fake.add_user("ada"), fake.add_user("bob")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):

        async def ask(person: Json, text: str) -> None:
            await finished_reply(fake, await fake.post(person, text, mention_bot=True))

        await ask(ada, "My kite is red.")
        await ask(bob, "What colour is my kite?")  # the same channel: each person has their own history
        assert said(model.prompts[-1]) == [("user", "What colour is my kite?")]
        await ask(ada, "What colour is my kite?")
        assert await shown(fake, await fake.command("reset", ada)) == ["Started a new conversation."]
        await ask(ada, "What colour is my kite?")

    assert [said(prompt) for prompt in model.prompts] == [
        [("user", "My kite is red.")],
        [("user", "What colour is my kite?")],  # Bob's: nothing of Ada's
        [("user", "My kite is red."), ("assistant", NOTED), ("user", "What colour is my kite?")],
        [("user", "What colour is my kite?")],  # after /reset
    ]


async def test_admins_pass_every_list(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    service.writer.generator = ScriptedGenerator(NOTED)
    ada, bob, admin = fake.add_user("ada"), fake.add_user("bob"), fake.owner
    settings = discord_settings(
        tmp_path, served_gguf, fake, allowed_user_ids=[ada["id"]], allowed_chat_ids=[str(fake.channel_id)]
    )
    async with running(service, settings, fake):
        # A listed person in an unlisted channel, an unlisted person in the listed channel: refused.
        elsewhere = await fake.post(ada, "Hello?", channel_id=fake.other_channel_id, mention_bot=True)
        unlisted = await fake.post(bob, "Hello?", mention_bot=True)
        refusals = [await first_answer(fake, elsewhere), await first_answer(fake, unlisted)]
        await finished_reply(fake, await fake.post(ada, "Hello?", mention_bot=True))
        # The admin is on neither list: answered in the unlisted channel and in a DM.
        await finished_reply(
            fake, await fake.post(admin, "Hello?", channel_id=fake.other_channel_id, mention_bot=True)
        )
        await finished_reply(fake, await fake.post(admin, "Hello?", dm=True))

    assert [refusal["content"] for refusal in refusals] == [REFUSAL, REFUSAL]
    dm = str(fake.dm_channels[admin["id"]])
    assert askers(app) == [
        (ada["id"], str(fake.channel_id)),
        (admin["id"], str(fake.other_channel_id)),
        (admin["id"], dm),
    ]


def askers(app: App) -> list[tuple[str, str]]:
    """(who, in which channel) of every message stored, oldest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from storage.tables import PersonRow, TurnRow

    query = (
        select(PersonRow.user_id, TurnRow.chat_id)
        .join(PersonRow, PersonRow.id == TurnRow.person_id)
        .where(TurnRow.role == "user")
        .order_by(TurnRow.id)
    )
    with Session(app.store.engine) as session:
        return [(user_id, chat_id) for user_id, chat_id in session.execute(query).all()]


async def test_typing_is_renewed_while_a_reply_waits(
    fake: FakeDiscord, service: ChatService, tmp_path: Path, served_gguf: Path
) -> None:
    # The model takes 10.5 s to its first word; Discord shows "typing" for 10 s a signal.
    service.writer.generator = ScriptedGenerator("Here you are.", pieces=1, pause_s=10.5)
    person = fake.add_user("ada")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "Take your time.", dm=True)
        await finished_reply(fake, sent)

    channel = sent["channel_id"]
    typing = [request.at for request in fake.requests_to("POST", rf"/api/v10/channels/{channel}/typing")]
    first_message = fake.requests_to("POST", rf"/api/v10/channels/{channel}/messages")[0].at
    assert len(typing) >= 2
    gaps = [later - earlier for earlier, later in zip(typing, [*typing[1:], first_message], strict=True)]
    assert max(gaps) < 10.0, gaps  # never a moment without "typing" until the reply shows


async def test_a_reviewer_rejects_a_suggested_answer(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    person, admin = fake.add_user("ada"), fake.owner
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "What is the capital of France?", mention_bot=True)
        reply = await finished_reply(fake, sent)
        opened = await fake.press(int(reply["id"]), f"iris:fix:{turn_of(reply)}", person)
        await fake.wait_for(lambda: opened.modal, 30, "the correction form")
        await shown(fake, await fake.submit(opened, "Madrid, obviously."))

        review = await fake.command("review", admin)
        _heading, card = await shown(fake, review, count=2)
        assert "Madrid, obviously." in card
        card_message = fake.messages[review.followup_ids[-1]]
        [_approve, reject, _edit] = custom_ids(card_message)
        assert reject.startswith("iris:review:reject:")
        [verdict] = await shown(fake, await fake.press(int(card_message["id"]), reject, admin))
        assert await shown(fake, await fake.command("review", admin), count=1) == [
            "No corrections are waiting for review."
        ]

    assert "❌ Rejected by" in verdict and fake.messages[int(card_message["id"])]["components"] == []
    [correction] = app.store.corrections(CorrectionStatus.REJECTED)
    assert correction.turn_id == turn_of(reply) and correction.reviewer == f"discord:{admin['id']}"
    assert app.store.corrections(CorrectionStatus.PENDING) == []
    assert app.store.corrections(CorrectionStatus.APPROVED) == []


CODE = "\n".join(
    f"    total_{i} = compute(values[{i}]) * 2  # step {i} of the long calculation" for i in range(60)
)
LONG_CODE_REPLY = (
    "Here is the whole program, step by step:\n\n```python\ndef main():\n"
    + CODE
    + "\n    return total_0\n```\nRun it with `python main.py`; it prints nothing."
)


async def test_a_long_reply_keeps_its_code_block_a_code_block_in_every_message(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    assert len(LONG_CODE_REPLY) > 2 * LIMIT
    service.writer.generator = ScriptedGenerator(LONG_CODE_REPLY, pieces=20, pause_s=0.02)
    person = fake.add_user("ada")
    settings = discord_settings(tmp_path, served_gguf, fake, discord_edit_interval_seconds=0.3)
    async with running(service, settings, fake):
        sent = await fake.post(person, "Write me the program.", dm=True)
        last = await finished_reply(fake, sent)

    pieces = [message["content"] for message in fake.replies_to(int(sent["id"]))]
    assert len(pieces) == 3 and all(len(piece) <= LIMIT for piece in pieces)
    parser = MarkdownIt("commonmark")
    blocks = [[t for t in parser.parse(piece) if t.type == "fence"] for piece in pieces]
    assert all(len(found) == 1 and found[0].info == "python" for found in blocks), pieces  # code in each
    assert all(piece.startswith("```python\n") for piece in pieces[1:])  # reopened with its language
    assert all(piece.endswith("\n```") for piece in pieces[:-1])  # and closed where it was cut
    assert "".join(found[0].content for found in blocks) == "def main():\n" + CODE + "\n    return total_0\n"
    assert pieces[0].startswith("Here is the whole program") and pieces[-1].endswith("it prints nothing.")
    assert app.store.get_turn(turn_of(last)).text == LONG_CODE_REPLY  # type: ignore[union-attr]
