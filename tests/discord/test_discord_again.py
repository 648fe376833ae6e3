"""🔁 another answer on Discord: the real discord.py client on the fake, the bundled model writing both."""

from __future__ import annotations

from pathlib import Path

from bots.app import App
from bots.discord_bot.choices import WRITING
from bots.discord_bot.components import GONE
from bots.render import CHOICE_QUESTION
from core.choices import ALREADY, NOT_YOURS, SAME, UNKNOWN
from core.service import ChatService
from tests.discord.conftest import discord_settings, finished_reply, running, shown, turn_of
from tests.discord.fake_discord import FakeDiscord, Json, custom_ids
from tests.telegram.conftest import query


def notes(fake: FakeDiscord, reply: Json) -> list[Json]:
    """The bot's answers to a 🔁 under ``reply``: a pair to choose from, or why there is none."""
    return [
        m
        for m in fake.replies_to(int(reply["id"]))
        if m["content"].startswith(CHOICE_QUESTION) or m["content"] == SAME
    ]


async def test_another_answer_is_posted_and_only_the_asker_picks(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    ada, eve = fake.add_user("ada"), fake.add_user("eve")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(ada, "Tell me about the sea.", mention_bot=True)
        reply = await finished_reply(fake, sent)
        turn = turn_of(reply)
        assert f"iris:again:{turn}" in custom_ids(reply)

        card: Json | None = None
        for tries in range(4):  # two samples may come out the same: then no pair, and 🔁 again
            pressed = await fake.press(int(reply["id"]), f"iris:again:{turn}", ada)
            assert await shown(fake, pressed) == [WRITING]
            await fake.wait_for(lambda: len(notes(fake, reply)) > tries, 120, "the pair")  # noqa: B023
            if notes(fake, reply)[-1]["content"].startswith(CHOICE_QUESTION):
                card = notes(fake, reply)[-1]
                break
        assert card is not None, "four samples all came out the same"
        [pair_id] = [row[0] for row in query(app, "SELECT id FROM answer_choices WHERE turn_id = ?", turn)]
        assert custom_ids(card) == [
            f"iris:pick:{pair_id}:1",
            f"iris:pick:{pair_id}:2",
            f"iris:pick:{pair_id}:n",
        ]
        assert reply["content"].strip() in card["content"]

        again = await fake.press(int(reply["id"]), f"iris:again:{turn}", eve)
        assert await shown(fake, again) == [ALREADY]
        stranger = await fake.press(int(card["id"]), f"iris:pick:{pair_id}:2", eve)
        assert await shown(fake, stranger) == [NOT_YOURS]
        assert query(app, "SELECT choice FROM answer_choices") == [(None,)]

        picked = await fake.press(int(card["id"]), f"iris:pick:{pair_id}:1", ada)
        assert await shown(fake, picked) == ["Thanks! You chose answer 1."]
        assert query(app, "SELECT choice FROM answer_choices") == [("first",)]
        await fake.wait_for(
            lambda: any(
                c.get("label") == "1 ✓"
                for row in fake.messages[int(card["id"])]["components"]
                for c in row["components"]
            ),
            10,
            "the pick marked",
        )

        # A forged press in the right channel: a pair and a reply that do not exist.
        forged = await fake.press(int(card["id"]), "iris:pick:999999:2", ada, forged=True)
        assert await shown(fake, forged) == [UNKNOWN]
        gone = await fake.press(int(reply["id"]), "iris:again:999999", ada, forged=True)
        assert await shown(fake, gone) == [GONE]
