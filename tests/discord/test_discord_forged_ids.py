"""A button press or form whose custom id carries a forged id too long for the database (docs/security.md).

A custom id comes back from the client, so a modified one can press ``iris:rate:up:<25 digits>``.
Before the ids were bounded, such an id reached the database (SQLite: ``OverflowError``;
PostgreSQL: ``bigint out of range``): the person read "Sorry, something went wrong", the log got
a traceback per press, ``iris:fix:<25 digits>`` opened a form, and ``iris:review:edit:<25 digits>``
was never answered (Discord shows "This interaction failed"). Now every id in a custom id has at
most 18 digits, and a longer one gets what a reply, pair or correction that does not exist gets.

The real discord.py client on the fake Discord, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bots.app import App
from bots.discord_bot.components import SORRY
from bots.settings import Settings
from core.service import ChatService
from tests.conftest import _postgres_database, make_settings
from tests.discord.conftest import discord_settings, finished_reply, running, shown, turn_of
from tests.discord.fake_discord import FakeDiscord, Interaction, Json

# 25 digits; and 2**63, the first id past PostgreSQL's bigint (19 digits).
FORGED = ("1" * 25, str(2**63))
# The largest id a custom id may carry: it fits, and names nothing here.
ABSENT = str(10**18 - 1)
TABLES = ("turns", "ratings", "corrections", "pending_corrections", "answer_choices", "audit_log")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path, served_gguf: Path) -> Iterator[Settings]:
    """The ``app`` fixture's settings on SQLite, or on a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield make_settings(tmp_path, served_gguf)
        return
    with contextlib.contextmanager(_postgres_database)() as url:
        yield make_settings(tmp_path, served_gguf, database_url=url)


def rows(app: App) -> dict[str, int]:
    """How many rows each table a press could write to holds."""
    with app.store.engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in TABLES
        }


async def answer_to(fake: FakeDiscord, who: Json, message_id: int, custom_id: str) -> str:
    """What a person sees after pressing ``custom_id`` (sent by a modified client) on a message."""
    pressed = await fake.press(message_id, custom_id, who, forged=True)
    [seen] = await shown(fake, pressed)
    assert pressed.modal is None, f"{custom_id} opened a form"
    return seen


async def form_answer(fake: FakeDiscord, opened: Interaction, custom_id: str) -> str:
    """What a person sees after sending a form whose custom id a modified client changed."""
    assert opened.modal is not None
    forged = Interaction(**{**opened.__dict__, "callbacks": [{"type": 9, "data": {**opened.modal}}]})
    forged.callbacks[0]["data"]["custom_id"] = custom_id
    [seen] = await shown(fake, await fake.submit(forged, "An answer."))
    return seen


async def test_a_forged_id_is_answered_as_a_missing_one_and_nothing_is_stored(
    fake: FakeDiscord,
    service: ChatService,
    app: App,
    tmp_path: Path,
    served_gguf: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ada, admin = fake.add_user("ada"), fake.owner
    async with running(service, discord_settings(tmp_path, served_gguf, fake), fake):
        reply = await finished_reply(fake, await fake.post(ada, "Say hello.", dm=True))
        review = await fake.command("review", admin)
        assert await shown(fake, review) == ["No corrections are waiting for review."]
        card = review.original_id or 0
        before = rows(app)
        caplog.set_level(logging.ERROR)

        presses = [  # (who, on which message, the custom id with {id} for the id)
            (ada, int(reply["id"]), "iris:rate:up:{id}"),
            (ada, int(reply["id"]), "iris:rate:down:{id}"),
            (ada, int(reply["id"]), "iris:again:{id}"),
            (ada, int(reply["id"]), "iris:pick:{id}:2"),
            (ada, card, "iris:review:approve:{id}"),  # not an admin
            (admin, card, "iris:review:reject:{id}"),
            (admin, card, "iris:review:edit:{id}"),
        ]
        seen: list[str] = []
        for who, message_id, custom_id in presses:
            missing = await answer_to(fake, who, message_id, custom_id.format(id=ABSENT))
            for forged in FORGED:
                answer = await answer_to(fake, who, message_id, custom_id.format(id=forged))
                assert answer == missing.replace(ABSENT, forged), custom_id
                seen.append(answer)
        # ✏️ on a forged id opens no form; a forged form's id gets what a missing reply's does.
        fix = await answer_to(fake, ada, int(reply["id"]), f"iris:fix:{FORGED[0]}")
        opened = await fake.press(int(reply["id"]), f"iris:fix:{ABSENT}", ada, forged=True)
        await fake.wait_for(lambda: opened.modal, 30, "the correction form")
        gone = await form_answer(fake, opened, f"iris:fix-form:{ABSENT}")
        assert [fix] + [await form_answer(fake, opened, f"iris:fix-form:{f}") for f in FORGED] == [gone] * 3
        seen += [fix, gone]

        assert "That reply is no longer stored, so it cannot be rated or corrected." in seen
        assert "That choice is no longer stored." in seen and "That correction no longer exists." in seen
        assert f"Correction #{FORGED[1]} was already reviewed, or no longer exists; nothing changed." in seen
        assert SORRY not in seen
        assert rows(app) == before  # no rating, correction, pair or audit entry
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

        # The real buttons still work.
        up = await fake.press(int(reply["id"]), f"iris:rate:up:{turn_of(reply)}", ada)
        assert await shown(fake, up) == ["Thanks for the 👍!"]
    assert rows(app)["ratings"] == before["ratings"] + 1
