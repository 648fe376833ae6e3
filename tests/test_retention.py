"""Retention: old conversations leave the database; consented ones with feedback stay, without identity.

The clock is fixed: "now" is a constant, and the rows a test wants old are
dated before it, as they would be after weeks of use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from bots.app import App
from core.domain import AuditAction, ChatRef, Person, Timings
from core.service import ChatService
from storage.repository import SqlStore
from storage.tables import ConversationRow, PersonRow, TurnRow

IRIS = str(Path(sys.executable).with_name("iris"))
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=45)
RECENT = NOW - timedelta(days=3)
DAYS = 30
ADA = Person("telegram", "11", "Ada")  # said yes to training use
BEN = Person("telegram", "12", "Ben")  # never said
CAL = Person("telegram", "13", "Cal")  # said yes, but rated nothing


def talk(store: SqlStore, person: Person, text: str, when: datetime) -> int:
    """One question and its reply in the person's private chat, dated ``when``; returns the reply's id."""
    chat = ChatRef(person.platform, person.user_id)
    receipt = store.record_user_turn(
        chat, person, text=text, from_voice=False, message_id=None, shared_history=False
    )
    reply = store.record_reply(
        receipt.conversation_id, receipt.turn_id, f"An answer to {text}", "m1", Timings()
    )
    with store.engine.begin() as connection:
        connection.execute(
            update(TurnRow).where(TurnRow.conversation_id == receipt.conversation_id).values(created_at=when)
        )
        connection.execute(
            update(ConversationRow).where(ConversationRow.id == receipt.conversation_id).values(started_at=when)
        )
        first_seen = when - timedelta(days=1)
        connection.execute(
            update(PersonRow)
            .where(PersonRow.user_id == person.user_id, PersonRow.created_at > first_seen)
            .values(created_at=first_seen)
        )
    return reply


def seed(store: SqlStore) -> dict[str, int]:
    ada_old = talk(store, ADA, "Ada asked this long ago", OLD)
    store.rate(ADA, ada_old, 1)
    store.set_consent(ADA, True)
    store.set_consent(CAL, True)
    ben_old = talk(store, BEN, "Ben asked this long ago", OLD)
    store.rate(BEN, ben_old, -1)
    talk(store, CAL, "Cal asked this long ago", OLD)
    store.reset(ChatRef("telegram", BEN.user_id), BEN, False)
    ben_new = talk(store, BEN, "Ben asked this recently", RECENT)
    return {"ada_old": ada_old, "ben_old": ben_old, "ben_new": ben_new}


def texts(store: SqlStore) -> set[str]:
    with store.engine.connect() as connection:
        return {text for text in connection.scalars(select(TurnRow.text)) if text}


def identities(store: SqlStore) -> set[tuple[str, str]]:
    with store.engine.connect() as connection:
        return {
            (row.platform, row.user_id)
            for row in connection.execute(select(PersonRow.platform, PersonRow.user_id))
        }


def test_prune_deletes_old_conversations_and_keeps_consented_feedback_without_identity(store: SqlStore) -> None:
    replies = seed(store)
    before = texts(store)

    dry = store.prune(NOW - timedelta(days=DAYS), dry_run=True)
    assert dry.dry_run and (dry.conversations, dry.kept_for_training) == (2, 1)
    assert texts(store) == before  # a dry run changes nothing

    report = store.prune(NOW - timedelta(days=DAYS))
    assert (report.conversations, report.turns, report.ratings, report.kept_for_training) == (2, 4, 1, 1)
    assert report.people == 2  # Cal and Ada: nothing left under their names, not seen since the cutoff
    assert texts(store) == {
        "Ada asked this long ago",
        "An answer to Ada asked this long ago",
        "Ben asked this recently",
        "An answer to Ben asked this recently",
    }
    # Ada's conversation stays as training data, under a stand-in: no platform, id or name of hers.
    kept = store.get_turn(replies["ada_old"])
    assert kept is not None and kept.chat is not None and kept.chat.platform == "retained"
    with store.engine.connect() as connection:
        stand_in = connection.execute(
            select(PersonRow.platform, PersonRow.display_name, PersonRow.consent)
            .join(TurnRow, TurnRow.person_id == PersonRow.id)
            .where(TurnRow.text == "Ada asked this long ago")
        ).one()
    assert stand_in == ("retained", None, True)
    assert ("telegram", BEN.user_id) in identities(store)  # Ben talked recently
    assert ("telegram", CAL.user_id) not in identities(store)
    assert ("telegram", ADA.user_id) not in identities(store)
    assert store.get_turn(replies["ben_old"]) is None and store.get_turn(replies["ben_new"]) is not None

    again = store.prune(NOW - timedelta(days=DAYS))
    assert (again.conversations, again.kept_for_training, again.people) == (0, 0, 0)  # kept stays kept


async def test_the_service_prunes_by_its_clock_and_the_running_bot_does_it_daily(app: App) -> None:
    seed(app.store)
    unset = ChatService(app.store, app.transcriber, app.generator, app.service.config, clock=NOW.timestamp)
    assert await unset.privacy.prune() is None  # no retention period set: nothing is pruned

    config = replace(app.service.config, chat=replace(app.service.config.chat, retention_days=DAYS))
    service = ChatService(
        app.store, app.transcriber, app.generator, config, clock=NOW.timestamp, audit=app.store
    )
    later = (NOW + timedelta(days=60)).timestamp
    late = ChatService(app.store, app.transcriber, app.generator, config, clock=later)
    dry = await late.privacy.prune(dry_run=True)
    assert dry is not None and dry.conversations == 3  # 60 days later even Ben's recent chat is old

    loop = asyncio.create_task(service.privacy.keep_pruning(interval_s=3600))
    try:
        await asyncio.wait_for(_until(app.store.audit_entries), 30)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert "Ben asked this long ago" not in texts(app.store)
    [entry] = app.store.audit_entries()
    assert (entry.actor, entry.action) == ("retention", AuditAction.PRUNE)
    assert entry.details["conversations"] == 2 and entry.details["kept_for_training"] == 1


async def _until(condition: object) -> None:
    assert callable(condition)
    while not condition():
        await asyncio.sleep(0.05)


def test_iris_db_prune_counts_first_then_deletes_also_from_exports(app: App, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    app.store.rate(BEN, talk(app.store, BEN, "Ben asked this long ago", now - timedelta(days=45)), 1)
    app.store.rate(ADA, talk(app.store, ADA, "Ada asked this recently", now - timedelta(days=1)), 1)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "IRIS_", "DATABASE"))
    }
    env["IRIS_DATA_DIR"] = str(app.settings.data_dir)

    def iris(*args: str, days: str = "30") -> subprocess.CompletedProcess[str]:
        run_env = {**env, "IRIS_CHAT_RETENTION_DAYS": days}
        return subprocess.run([IRIS, *args], env=run_env, capture_output=True, text=True, timeout=300)

    exported = tmp_path / "exports" / "monday"
    assert iris("feedback", "export", "--out", str(exported)).returncode == 0
    assert "Ben asked this long ago" in (exported / "sft.jsonl").read_text()

    unset = iris("db", "prune", days="0")
    assert unset.returncode == 2 and "IRIS_CHAT_RETENTION_DAYS is not set" in unset.stderr
    dry = iris("db", "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 conversations, 2 messages, 1 ratings, 0 corrections and 1 people" in dry.stdout
    assert "Ben asked this long ago" in texts(app.store)
    assert "Ben asked this long ago" in (exported / "sft.jsonl").read_text()  # a dry run touches no file
    done = iris("db", "prune")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 conversations, 2 messages" in done.stdout and "would" not in done.stdout
    assert "Also took their words out of" in done.stdout
    assert texts(app.store) == {"Ada asked this recently", "An answer to Ada asked this recently"}
    export = (exported / "sft.jsonl").read_text() + (exported / "kto.jsonl").read_text()
    assert "Ben asked this long ago" not in export and "Ada asked this recently" in export
    [entry] = app.store.audit_entries()
    assert entry.action is AuditAction.PRUNE and entry.actor.startswith("console:")
