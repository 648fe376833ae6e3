"""A button press whose data carries a forged id too long for the database (threat table, docs/security.md).

Callback data comes back verbatim from any client, so a modified one can send ``rate:<25 digits>:up``.
Before the ids were bounded, such an id reached the database: SQLite raised ``OverflowError``,
PostgreSQL ``bigint out of range``; the person read "Sorry, something went wrong" and the log
got a traceback per press. Now every id a button carries has at most 18 digits, and a press with a
longer one gets what a press on a reply (pair, suggestion) that does not exist gets.

Through the real python-telegram-bot application on the fake Bot API, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bots.app import App
from bots.settings import Settings
from bots.telegram_bot.application import APOLOGY
from tests.conftest import _postgres_database, make_settings
from tests.telegram.conftest import ADMIN_ID, StartBot
from tests.telegram.fake_bot_api import FakeBotApi, Sent, private_chat, user
from tests.telegram.scenario import turn_of, wait_for_reply

ADA = user(1, "Ada")
ADMIN = user(ADMIN_ID, "Grace")
# 25 digits; and 2**63, the first id past PostgreSQL's bigint (19 digits).
FORGED = ("1" * 25, str(2**63))
# The largest id a button may carry: it fits, and names nothing here.
ABSENT = str(10**18 - 1)
# Every table a press could write to.
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


async def answer_to(api: FakeBotApi, who: dict[str, object], under: Sent, data: str) -> tuple[str, bool]:
    """Press ``data`` on a message; the text (and whether an alert) the person's client shows."""
    query_id = api.press(who, under, data)["callback_query"]["id"]

    def answered() -> list[dict[str, object]]:
        return [
            c.params for c in api.calls_to("answerCallbackQuery") if c.params["callback_query_id"] == query_id
        ]

    [answer] = await api.wait_for(answered, timeout=30)
    return str(answer.get("text")), bool(answer.get("show_alert"))


async def test_a_forged_id_is_answered_as_a_missing_one_and_nothing_is_stored(
    start_bot: StartBot, fake_api: FakeBotApi, app: App, caplog: pytest.LogCaptureFixture
) -> None:
    await start_bot()
    fake_api.send_text(private_chat(ADA), ADA, "Say hello.")
    reply = await wait_for_reply(fake_api, ADA["id"])
    fake_api.send_text(private_chat(ADMIN), ADMIN, "/review")
    [card] = await fake_api.wait_for(lambda: fake_api.chat(ADMIN_ID))  # nothing waits for review
    before = rows(app)
    caplog.set_level(logging.ERROR)

    presses = [  # (who, on which message, the data with {id} for the id)
        (ADA, reply, "rate:{id}:up"),
        (ADA, reply, "rate:{id}:down"),
        (ADA, reply, "fix:{id}"),
        (ADA, reply, "again:{id}"),
        (ADA, reply, "pick:{id}:1"),
        (ADA, reply, "review:{id}:approve"),  # not an admin
        (ADMIN, card, "review:{id}:approve"),
        (ADMIN, card, "review:{id}:reject"),
        (ADMIN, card, "review:{id}:edit"),
    ]
    for who, under, data in presses:
        missing = await answer_to(fake_api, who, under, data.format(id=ABSENT))
        for forged in FORGED:
            answer = await answer_to(fake_api, who, under, data.format(id=forged))
            assert answer == (missing[0].replace(ABSENT, forged), missing[1]), data
    answers = [c.params["text"] for c in fake_api.calls_to("answerCallbackQuery")]
    assert len(answers) == 3 * len(presses)
    assert "That reply is no longer stored." in answers and "That choice is no longer stored." in answers
    assert (
        f"Suggested answer #{FORGED[0]} was already reviewed, or no longer exists; nothing changed." in answers
    )
    assert APOLOGY not in answers

    assert rows(app) == before  # no rating, correction, awaited correction, pair or audit entry
    # Nothing was said in either chat besides the reply and the /review answer: no apology, no prompt.
    assert [m.message_id for m in fake_api.chat(ADA["id"])] == [reply.message_id]
    assert [m.message_id for m in fake_api.chat(ADMIN_ID)] == [card.message_id]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    # The real buttons still work.
    assert await answer_to(fake_api, ADA, reply, f"rate:{turn_of(reply)}:up") == ("Thanks for the 👍!", False)
    assert rows(app)["ratings"] == before["ratings"] + 1
