"""Discord shards across two ``iris run discord`` processes on one PostgreSQL.

Each process connects only its shard (DISCORD_SHARD_COUNT=2, DISCORD_SHARD_IDS=0 or 1); the fake
gateway routes a server's events to that server's shard and DMs to shard 0, as Discord does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import _postgres_database
from tests.discord.conftest import finished_reply
from tests.discord.fake_discord import FakeDiscord
from tests.discord.test_discord_run import iris_environment, iris_process, output

pytestmark = pytest.mark.postgres


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A fake Discord whose server falls on shard 1 of 2 (DMs are always shard 0)."""
    server = FakeDiscord(guild_id=(1_300_000_000_000_000_000 >> 22 | 1) << 22)
    await server.start()
    yield server
    await server.stop()


async def test_two_processes_each_answer_their_own_shard(
    fake: FakeDiscord, tmp_path: Path, served_gguf: Path
) -> None:
    person = fake.add_user("ada")
    with contextlib.contextmanager(_postgres_database)() as database:
        env = iris_environment(
            tmp_path / "data",
            served_gguf,
            DISCORD_BOT_TOKEN=fake.token,
            DISCORD_API_BASE_URL=fake.base_url,
            DATABASE_URL=database,
            DISCORD_SHARD_COUNT="2",
            IRIS_GENERATION_MAX_TOKENS="8",
        )
        cwds = [tmp_path / "shard-0", tmp_path / "shard-1"]
        for cwd in cwds:
            cwd.mkdir()
        async with (
            iris_process(cwds[0], {**env, "DISCORD_SHARD_IDS": "0"}, "run", "discord") as first,
            iris_process(cwds[1], {**env, "DISCORD_SHARD_IDS": "1"}, "run", "discord") as second,
        ):

            def both_connected() -> bool:
                for process, cwd in ((first, cwds[0]), (second, cwds[1])):
                    if process.returncode is not None:
                        raise AssertionError(f"iris exited with {process.returncode}:\n{output(cwd)}")
                return sorted(tuple(i.get("shard") or ()) for i in fake.identifies) == [(0, 2), (1, 2)]

            await fake.wait_for(both_connected, 240, "both shards to identify")

            dm = await fake.post(person, "What is the capital of France?", dm=True)
            assert (await finished_reply(fake, dm, timeout=120))["content"].strip()
            in_server = await fake.post(person, "What is the capital of Italy?", mention_bot=True)
            assert (await finished_reply(fake, in_server, timeout=120))["content"].strip()

    assert fake.guild_shard() == 1
    messages = [shard for event, shard in fake.routed if event == "MESSAGE_CREATE"]  # theirs and the bot's
    # The DM (and the reply in it) went to shard 0's process, the server's messages to shard 1's;
    # each process answered what only it received.
    assert messages[0] == 0 and sorted(set(messages)) == [0, 1]
    logs = output(cwds[0]) + output(cwds[1])
    assert "Traceback" not in logs
