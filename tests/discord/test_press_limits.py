"""Presses and corrections over the hourly limit, as a person meets them on Discord."""

from __future__ import annotations

from pathlib import Path

from bots.app import App
from core.limits import RateLimits
from core.service import ChatService
from tests.discord.conftest import discord_settings, finished_reply, running, shown, stored_ratings, turn_of
from tests.discord.fake_discord import FakeDiscord


async def test_presses_and_corrections_over_the_limit_are_refused_with_when_to_come_back(
    fake: FakeDiscord, service: ChatService, app: App, tmp_path: Path, served_gguf: Path
) -> None:
    service.limiter.limits = RateLimits(presses_per_hour=2, corrections_per_hour=1)
    service.limiter.exempt = frozenset()
    person = fake.add_user("mallory")
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        sent = await fake.post(person, "What is the capital of France?", dm=True)
        reply = await finished_reply(fake, sent)
        turn = turn_of(reply)
        for vote in ("up", "down"):
            await shown(fake, await fake.press(int(reply["id"]), f"iris:rate:{vote}:{turn}", person))
        [refused] = await shown(fake, await fake.press(int(reply["id"]), f"iris:rate:up:{turn}", person))
        assert refused.startswith("You have pressed 👍/👎 2 times in the last hour, my limit per person.")
        assert "Please come back in" in refused
        assert stored_ratings(app) == [(turn, person["id"], -1)]  # the third press changed nothing

        for expected in ("Thanks!", "You have sent me 1 better answer in the last hour"):
            opened = await fake.press(int(reply["id"]), f"iris:fix:{turn}", person)
            await fake.wait_for(lambda: opened.modal, 30, "the correction form")  # noqa: B023 (awaited here)
            [answer] = await shown(fake, await fake.submit(opened, "Paris is the capital of France."))
            assert answer.startswith(expected)
    assert len(app.store.corrections()) == 1
