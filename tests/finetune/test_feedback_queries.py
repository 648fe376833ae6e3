"""The read queries behind the export, review and stats, on SQLite and on PostgreSQL.

The store is seeded through ``SqlStore`` itself (no models needed), the way the
service would write: turns, replies, ratings, corrections, a failed turn, /forget.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.domain import ChatRef, CorrectionStatus, Person, Role, Timings
from finetune.feedback import export_feedback
from finetune.jsonl import read as read_jsonl
from storage import queries
from storage.repository import SqlStore

ANN = Person("discord", "11", "Ann")
BEN = Person("discord", "22", "Ben")
GONE = Person("discord", "33", "Gone")


def exchange(store: SqlStore, person: Person, text: str, reply: str, model: str = "m1") -> tuple[int, int]:
    chat = ChatRef("discord", f"dm-{person.user_id}")
    receipt = store.record_user_turn(
        chat, person, text=text, from_voice=False, message_id=None, shared_history=False
    )
    reply_id = store.record_reply(receipt.conversation_id, receipt.turn_id, reply, model, Timings())
    return receipt.turn_id, reply_id


def test_ratings_corrections_and_contexts_read_back(store: SqlStore, database_url: str) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    q1, r1 = exchange(store, ANN, "What is 2 plus 2?", "It is 5.")
    q2, r2 = exchange(store, ANN, "And 3 plus 3?", "It is 6.", model="m2")
    failed = store.record_user_turn(
        ChatRef("discord", "dm-11"), ANN, text=None, from_voice=True, message_id="v1", shared_history=False
    )
    store.mark_failed(failed.turn_id, "nothing heard")
    _, r3 = exchange(store, BEN, "Name a fruit.", "A carrot.")
    store.rate(ANN, r1, -1)
    store.rate(ANN, r2, -1)
    store.rate(ANN, r2, 1)  # changed
    store.rate(BEN, r3, -1)
    approved = store.add_correction(ANN, r1, "2 plus 2 is 4.")
    store.review_correction(approved, True, "admin")
    rejected = store.add_correction(BEN, r3, "A banana.")
    store.review_correction(rejected, False, "admin")
    store.add_correction(BEN, r3, "An apple.")  # pending

    engine = store.engine
    people = queries.speakers(engine)
    by_uid = {s.person.user_id: s.id for s in people.values()}
    ratings = queries.ratings(engine)
    assert [(r.reply_id, r.value, r.rater_id, r.asker_id) for r in ratings] == [
        (r1, -1, by_uid["11"], by_uid["11"]),
        (r2, 1, by_uid["11"], by_uid["11"]),
        (r3, -1, by_uid["22"], by_uid["22"]),
    ]
    assert {r.model_version for r in ratings} == {"m1", "m2"}
    assert all(r.rated_at.tzinfo is not None and r.rated_at >= start for r in ratings)
    assert queries.ratings(engine, since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(queries.ratings(engine, until=datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1))) == 3

    [fix] = queries.corrections(engine)  # approved ones by default
    assert (fix.text, fix.reply, fix.reviewer, fix.asker_id) == (
        "2 plus 2 is 4.",
        "It is 5.",
        "admin",
        by_uid["11"],
    )
    assert fix.reviewed_at is not None and fix.reviewed_at >= start
    assert [c.status for c in queries.corrections(engine, None)] == [
        CorrectionStatus.APPROVED,
        CorrectionStatus.REJECTED,
        CorrectionStatus.PENDING,
    ]
    assert [c.text for c in queries.corrections(engine, CorrectionStatus.PENDING)] == ["An apple."]

    turns = queries.conversation_turns(engine, [fix.conversation_id])[fix.conversation_id]
    assert [(t.id, t.role, t.person_id) for t in turns] == [
        (q1, Role.USER, by_uid["11"]),
        (r1, Role.ASSISTANT, by_uid["11"]),
        (q2, Role.USER, by_uid["11"]),
        (r2, Role.ASSISTANT, by_uid["11"]),
    ]  # the failed voice note is not context
    assert turns[1].reply_to_id == q1


def test_consent_is_stored_and_honoured_by_the_export(
    store: SqlStore, database_url: str, tmp_path: Path
) -> None:
    _, r1 = exchange(store, ANN, "What is the capital of Spain?", "Madrid.")
    _, r2 = exchange(store, BEN, "Ben's secret question?", "Ben's answer.")
    _, r3 = exchange(store, GONE, "Gone's secret question?", "Gone's answer.")
    for person, reply in ((ANN, r1), (BEN, r2), (GONE, r3)):
        store.rate(person, reply, 1)
    store.forget(GONE)
    said_no = queries.set_consent(store.engine, BEN, False)
    newcomer = queries.set_consent(store.engine, Person("discord", "44"), True)  # before their first message
    people = queries.speakers(store.engine)
    assert people[said_no.id].consent is False and people[newcomer.id].consent is True
    assert {s.person.user_id for s in people.values()} == {"11", "22", "44"}

    manifest = export_feedback(database_url, tmp_path / "out")
    assert manifest.counts["kto"] == 1 and manifest.excluded["no_consent"] == 1
    text = "".join(p.read_text() for p in sorted((tmp_path / "out").iterdir()))
    assert "Madrid" in text and "Ben's" not in text and "Gone's" not in text
    assert read_jsonl(tmp_path / "out" / "sft.jsonl")[0]["conversations"][0]["value"] == (
        "What is the capital of Spain?"
    )
    assert export_feedback(database_url, tmp_path / "opt-in", consent="opt-in").counts["kto"] == 0


def test_activity_counts_per_day_and_model(store: SqlStore) -> None:
    _, r1 = exchange(store, ANN, "One?", "1.", model="m1")
    _, r2 = exchange(store, ANN, "Two?", "2.", model="m1")
    _, r3 = exchange(store, BEN, "Three?", "3.", model="m2")
    store.rate(ANN, r1, 1)
    store.rate(BEN, r1, -1)
    store.rate(ANN, r2, 1)
    store.add_correction(BEN, r3, "Three.")
    store.record_user_turn(
        ChatRef("discord", "dm-11"), ANN, text="voice", from_voice=True, message_id="v9", shared_history=False
    )
    figures = queries.activity(store.engine)
    today = datetime.now(UTC).date()
    assert [(d.model, d.replies, d.up, d.down) for d in figures.models] == [("m1", 2, 2, 1), ("m2", 1, 0, 0)]
    assert {d.day for d in figures.models} <= {today, today - timedelta(days=1)}  # a run across midnight
    assert sum(d.text for d in figures.turns) == 3 and sum(d.voice for d in figures.turns) == 1
    assert sum(d.pending for d in figures.corrections) == 1
