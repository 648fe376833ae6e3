"""What several processes on one database rely on, on SQLite and PostgreSQL: the inbox (stored once,
claimed once, in order per key, back after a stop), resuming an unanswered message, one retrain at a time."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from core.domain import ChatRef, Person, Timings
from storage.database import make_engine
from storage.inbox import SqlInbox
from storage.locks import LockHeld, database_lock
from storage.repository import SqlStore

ALICE = Person("telegram", "1")


def _json(value: object) -> object:
    """A JSON column as read back: a dict on PostgreSQL, its text on SQLite."""
    return json.loads(value) if isinstance(value, str) else value


def test_an_update_is_stored_once_and_claimed_by_one_process(store: SqlStore) -> None:
    inbox = SqlInbox(store.engine)
    assert inbox.put("telegram", "1", "chat:1", {"text": "hi"})
    assert not inbox.put("telegram", "1", "chat:1", {"text": "hi"})  # Telegram retried the delivery

    with ThreadPoolExecutor(4) as pool:  # four processes ask at once
        claims = list(pool.map(lambda n: inbox.claim("telegram", f"p{n}", 30, 10), range(4)))
    winners = [claim for claim in claims if claim]
    assert len(winners) == 1 and winners[0][0].payload == {"text": "hi"} and winners[0][0].attempts == 1
    inbox.done(winners[0][0].id)
    assert inbox.pending("telegram") == 0
    assert inbox.claim("telegram", "p0", 30, 10) == []
    assert not inbox.put("telegram", "1", "chat:1", {"text": "hi"})  # still known after it was handled


def test_one_key_at_a_time_in_order_and_other_keys_alongside(store: SqlStore) -> None:
    inbox = SqlInbox(store.engine)
    for n in range(3):
        inbox.put("telegram", f"a{n}", "chat:a", {"n": n})
    inbox.put("telegram", "b0", "chat:b", {"n": 10})
    first = inbox.claim("telegram", "p1", 30, 10)
    assert [item.payload["n"] for item in first] == [0, 10]  # the oldest of each key
    assert inbox.claim("telegram", "p2", 30, 10) == []  # a0 is being handled: a1 waits
    inbox.done(first[0].id)
    (second,) = inbox.claim("telegram", "p2", 30, 10)
    assert second.payload["n"] == 1


def test_a_stopped_process_gives_its_update_back_when_the_lease_runs_out(store: SqlStore) -> None:
    inbox = SqlInbox(store.engine)
    inbox.put("telegram", "7", "chat:a", {"n": 7})
    (taken,) = inbox.claim("telegram", "killed", 0.5, 10)
    inbox.renew("killed", [taken.id], 0.5)
    assert inbox.claim("telegram", "other", 30, 10) == []
    time.sleep(0.7)  # no renewal: the process is gone
    (again,) = inbox.claim("telegram", "other", 30, 10)
    assert again.id == taken.id and again.attempts == 2
    inbox.renew("killed", [taken.id], 30)  # a late renewal of the old owner changes nothing
    time.sleep(0.1)
    assert inbox.claim("telegram", "third", 30, 10) == []


def test_what_a_stopped_process_showed_goes_to_the_process_taking_over_and_no_further(store: SqlStore) -> None:
    inbox = SqlInbox(store.engine)
    inbox.put("telegram", "1", "chat:a", {"n": 1})
    (first,) = inbox.claim("telegram", "process-a", 0.2, 10)
    assert first.shown == {}
    inbox.note_shown("process-a", first.id, {"transcript": [10], "reply": [11]})
    inbox.note_shown("process-a", first.id, {"transcript": [10], "reply": [11, 12]})  # the latest is kept
    time.sleep(0.3)  # process-a was killed: its lease runs out
    (taken,) = inbox.claim("telegram", "process-b", 30, 10)
    assert taken.attempts == 2 and taken.shown == {"transcript": [10], "reply": [11, 12]}
    # process-a was only stalled, not dead: its late write must not replace what process-b shows.
    inbox.note_shown("process-b", taken.id, {"transcript": [20]})
    inbox.note_shown("process-a", taken.id, {"reply": [66]})
    with store.engine.connect() as connection:
        assert _json(connection.execute(text("SELECT shown FROM inbox")).scalar_one()) == {"transcript": [20]}
    inbox.done(taken.id)
    inbox.note_shown("process-b", taken.id, {"reply": [99]})  # a late write after done changes nothing
    with store.engine.connect() as connection:
        (shown,) = connection.execute(text("SELECT shown FROM inbox")).one()
    assert shown is None  # message ids are not kept once the update is handled


def test_a_redelivered_message_without_an_answer_is_answered_not_refused(store: SqlStore) -> None:
    chat = ChatRef("telegram", "5")

    def deliver(resume: bool) -> tuple[int, bool]:
        receipt = store.record_user_turn(
            chat, ALICE, text="hi", from_voice=False, message_id="42", shared_history=False, resume=resume
        )
        return receipt.turn_id, receipt.duplicate

    turn, duplicate = deliver(False)
    assert not duplicate
    assert deliver(False) == (turn, True)  # a plain second delivery: never answered twice
    assert deliver(True) == (turn, False)  # taken over after a stop, unanswered: answer it now
    receipt = store.record_user_turn(
        chat, ALICE, text="x", from_voice=False, message_id="43", shared_history=False
    )
    store.record_reply(receipt.conversation_id, turn, "hello", "m", Timings())
    assert deliver(True) == (turn, True)  # answered meanwhile: a duplicate after all


def test_one_retrain_at_a_time_across_processes(store: SqlStore) -> None:
    with database_lock(store.engine, "retrain"):
        if store.engine.dialect.name == "postgresql":
            other = make_engine(store.engine.url.render_as_string(hide_password=False))  # another process's
            try:
                with pytest.raises(LockHeld), database_lock(other, "retrain"):
                    pass
                with database_lock(other, "something else"):  # other names are free
                    pass
            finally:
                other.dispose()
    with database_lock(store.engine, "retrain"):  # released at the end of the block
        pass
