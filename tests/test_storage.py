"""The storage suite; every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from threading import Barrier
from typing import TypeVar

import pytest
from sqlalchemy import inspect, select

from core.domain import ChatRef, CorrectionStatus, Person, RatingOutcome, Role, Timings, UserTurnReceipt
from core.ports import AlreadyReviewed
from storage.migrate import current, upgrade
from storage.queries import speakers
from storage.repository import NotFound, SqlStore
from storage.tables import PersonRow, RatingRow

T = TypeVar("T")

ALICE = Person("telegram", "100", "Alice")
BOB = Person("telegram", "200", "Bob")
GROUP = ChatRef("telegram", "-42")


def ask(
    store: SqlStore,
    person: Person,
    text: str,
    message_id: str | None = None,
    chat: ChatRef = GROUP,
    shared: bool = False,
) -> tuple[int, int]:
    receipt = store.record_user_turn(
        chat, person, text=text, from_voice=False, message_id=message_id, shared_history=shared
    )
    reply = store.record_reply(
        receipt.conversation_id, receipt.turn_id, f"answer to {text}", "m1", Timings(generate_ms=5, tokens=3)
    )
    return receipt.turn_id, reply


def test_migrations_reach_head_and_match_the_tables(store: SqlStore, database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from storage.tables import Base

    assert current(database_url) is not None
    upgrade(database_url)  # a second upgrade is a no-op
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert {"people", "conversations", "turns", "ratings", "corrections", "model_versions"} <= set(
        inspect(store.engine).get_table_names()
    )


def test_a_turn_is_stored_with_its_timings_and_model(store: SqlStore) -> None:
    receipt = store.record_user_turn(
        GROUP, ALICE, text=None, from_voice=True, message_id="7", shared_history=False
    )
    store.set_transcript(receipt.turn_id, "hello there", 2.5, 120.0)
    reply_id = store.record_reply(
        receipt.conversation_id, receipt.turn_id, "Hi!", "smol-f16", Timings(120.0, 300.0, 450.0, 4)
    )
    question, reply = store.get_turn(receipt.turn_id), store.get_turn(reply_id)
    assert question is not None and reply is not None
    assert (question.role, question.text, question.from_voice, question.audio_seconds) == (
        Role.USER,
        "hello there",
        True,
        2.5,
    )
    assert question.timings.transcribe_ms == 120.0
    assert (reply.role, reply.text, reply.model_version) == (Role.ASSISTANT, "Hi!", "smol-f16")
    assert reply.timings == Timings(120.0, 300.0, 450.0, 4)
    assert reply.created_at.tzinfo is not None


def test_a_redelivered_message_is_recognised(store: SqlStore) -> None:
    first = store.record_user_turn(
        GROUP, ALICE, text="hi", from_voice=False, message_id="55", shared_history=False
    )
    again = store.record_user_turn(
        GROUP, ALICE, text="hi", from_voice=False, message_id="55", shared_history=False
    )
    other_chat = store.record_user_turn(
        ChatRef("telegram", "9"), ALICE, text="hi", from_voice=False, message_id="55", shared_history=False
    )
    assert not first.duplicate and again.duplicate and again.turn_id == first.turn_id
    assert not other_chat.duplicate  # message ids are unique per chat only


def test_text_no_database_can_store_is_kept_with_a_mark_in_place_of_what_cannot_be_written(
    store: SqlStore,
) -> None:
    """A lone surrogate (undecodable bytes on stdin, a forged ``"\\ud800"`` in JSON), or on PostgreSQL a
    NUL, made the database refuse the whole row: the message was lost and sending it again failed
    the same way."""
    thread = ChatRef("telegram", "-42", "topic \udcff")
    asked = "Where is \ud800 Paris?\0"

    def receive() -> UserTurnReceipt:
        return store.record_user_turn(
            thread, ALICE, text=asked, from_voice=False, message_id="m\udc80", shared_history=False
        )

    first, again = receive(), receive()
    assert again.duplicate and again.turn_id == first.turn_id  # the id is looked up as it was stored
    question = store.get_turn(first.turn_id)
    assert question is not None and question.text == "Where is \ufffd Paris?\ufffd"
    reply_id = store.record_reply(
        first.conversation_id, first.turn_id, "In \ud83d\ude00 France", "m1", Timings()
    )
    reply = store.get_turn(reply_id)
    assert reply is not None and reply.text == "In 😀 France"  # a pair of surrogates is the character
    correction_id = store.add_correction(ALICE, reply_id, "Paris \udfff is in\0 France.")
    approved = store.review_correction(correction_id, approve=True, reviewer="cli:\ud800")
    assert (approved.text, approved.reviewer) == ("Paris \ufffd is in\ufffd France.", "cli:\ufffd")
    # Several rows at once go the same way: executemany, and an insert that SQLAlchemy batches
    # into one statement with one mapping for all rows ("insertmanyvalues", with RETURNING).
    names = [
        {"platform": platform, "user_id": f"u{n}", "display_name": f"name {bad}"}
        for platform in ("many", "batched")
        for n, bad in enumerate("\udc80\0")
    ]
    with store.engine.begin() as connection:
        connection.execute(PersonRow.__table__.insert(), names[:2])
        connection.execute(PersonRow.__table__.insert().returning(PersonRow.id), names[2:])
    with store.engine.connect() as connection:
        stored = connection.execute(
            select(PersonRow.platform, PersonRow.display_name).where(
                PersonRow.platform.in_(["many", "batched"])
            )
        ).all()
        assert sorted(stored) == [("batched", "name \ufffd")] * 2 + [("many", "name \ufffd")] * 2


def test_concurrent_deliveries_of_one_message_store_one_turn(store: SqlStore) -> None:
    def deliver(_: int) -> bool:
        return store.record_user_turn(
            GROUP, BOB, text="x", from_voice=False, message_id="99", shared_history=False
        ).duplicate

    with ThreadPoolExecutor(4) as pool:
        duplicates = list(pool.map(deliver, range(4)))
    assert duplicates.count(False) == 1
    assert store.stats().user_turns == 1


def test_each_person_has_their_own_history_in_a_group_unless_shared(store: SqlStore) -> None:
    ask(store, ALICE, "a1")
    ask(store, BOB, "b1")
    a2 = store.record_user_turn(
        GROUP, ALICE, text="a2", from_voice=False, message_id=None, shared_history=False
    )
    history = store.history(a2.conversation_id, a2.turn_id, 10)
    assert [t.text for t in history] == ["a1", "answer to a1"]

    ask(store, ALICE, "s1", shared=True)
    s2 = store.record_user_turn(GROUP, BOB, text="s2", from_voice=False, message_id=None, shared_history=True)
    assert [t.text for t in store.history(s2.conversation_id, s2.turn_id, 10)] == ["s1", "answer to s1"]


def test_history_skips_failed_turns_and_keeps_the_latest(store: SqlStore) -> None:
    ask(store, ALICE, "one")
    bad = store.record_user_turn(
        GROUP, ALICE, text=None, from_voice=True, message_id=None, shared_history=False
    )
    store.mark_failed(bad.turn_id, "I didn't hear any speech", 3.0)
    ask(store, ALICE, "two")
    now = store.record_user_turn(
        GROUP, ALICE, text="three", from_voice=False, message_id=None, shared_history=False
    )
    assert [t.text for t in store.history(now.conversation_id, now.turn_id, 2)] == ["two", "answer to two"]
    failed = store.get_turn(bad.turn_id)
    assert failed is not None and failed.error == "I didn't hear any speech" and failed.audio_seconds == 3.0


def test_one_rating_per_person_per_reply_and_a_second_press_changes_it(store: SqlStore) -> None:
    _, reply = ask(store, ALICE, "q")
    assert store.rate(ALICE, reply, 1) is RatingOutcome.CREATED
    assert store.rate(ALICE, reply, 1) is RatingOutcome.UNCHANGED
    assert store.rate(ALICE, reply, -1) is RatingOutcome.CHANGED
    assert store.rate(BOB, reply, 1) is RatingOutcome.CREATED
    (model,) = store.stats().by_model
    assert (model.model, model.replies, model.up, model.down) == ("m1", 1, 1, 1)


def test_corrections_wait_for_review(store: SqlStore) -> None:
    _, reply = ask(store, ALICE, "Who maintains Iris?")
    correction_id = store.add_correction(ALICE, reply, "The Iris team.")
    (pending,) = store.corrections(CorrectionStatus.PENDING)
    assert (pending.id, pending.prompt, pending.original_reply, pending.text) == (
        correction_id,
        "Who maintains Iris?",
        "answer to Who maintains Iris?",
        "The Iris team.",
    )
    approved = store.review_correction(
        correction_id, approve=True, reviewer="telegram:1", text="The Iris maintainers."
    )
    assert approved.status is CorrectionStatus.APPROVED and approved.reviewer == "telegram:1"
    assert approved.text == "The Iris maintainers." and approved.reviewed_at is not None
    assert store.corrections(CorrectionStatus.PENDING) == []
    with pytest.raises(NotFound):
        store.review_correction(12345, approve=False, reviewer="x")


def test_of_decisions_pressed_at_once_in_chats_only_the_first_counts(store: SqlStore) -> None:
    _, reply = ask(store, ALICE, "Who maintains Iris?")
    correction_id = store.add_correction(ALICE, reply, "The Iris team.")
    edits = {0: "Edit 0.", 2: "Edit 2.", 4: "Edit 4."}  # the others reject

    def press(admin: int) -> str:
        try:
            text = edits.get(admin)
            store.review_correction(correction_id, text is not None, f"admin:{admin}", text, pending_only=True)
        except AlreadyReviewed:
            return "already"
        return f"admin:{admin}"

    outcomes = at_once([partial(press, admin) for admin in range(6)])
    [first] = [outcome for outcome in outcomes if outcome != "already"]
    decided = store.correction(correction_id)
    assert decided is not None and decided.reviewer == first  # what is stored is the first decision whole
    edit = edits.get(int(first.split(":")[1]))
    status = CorrectionStatus.REJECTED if edit is None else CorrectionStatus.APPROVED
    assert (decided.status, decided.text) == (status, edit or "The Iris team.")
    with pytest.raises(NotFound):
        store.review_correction(12345, True, "admin:0", pending_only=True)
    # Without pending_only (the terminal: an admin changing their mind) a decision is made again.
    assert store.review_correction(correction_id, False, "cli").status is CorrectionStatus.REJECTED
    assert store.correction(12345) is None


def test_reset_starts_a_new_conversation(store: SqlStore) -> None:
    ask(store, ALICE, "before")
    assert store.reset(GROUP, ALICE, shared_history=False)
    after = store.record_user_turn(
        GROUP, ALICE, text="after", from_voice=False, message_id=None, shared_history=False
    )
    assert store.history(after.conversation_id, after.turn_id, 10) == []
    assert not store.reset(GROUP, Person("telegram", "nobody"), shared_history=False)


def test_forget_deletes_everything_about_a_person_and_nothing_else(store: SqlStore) -> None:
    _, alice_reply = ask(store, ALICE, "alice secret")
    _, bob_reply = ask(store, BOB, "bob question")
    shared_q, shared_reply = ask(store, ALICE, "alice in the group", shared=True)
    store.rate(ALICE, bob_reply, 1)
    store.rate(BOB, alice_reply, -1)
    store.add_correction(ALICE, bob_reply, "alice's better answer")
    store.add_correction(BOB, shared_reply, "bob fixes alice's reply")

    report = store.forget(ALICE)

    assert report.turns == 4 and report.ratings == 1 and report.corrections == 1 and report.conversations == 1
    # Her own words, for /forget to find their copies outside the database.
    assert sorted(report.words) == ["alice in the group", "alice secret", "alice's better answer"]
    for turn_id in (alice_reply, shared_q, shared_reply):
        assert store.get_turn(turn_id) is None
    assert store.get_turn(bob_reply) is not None
    figures = store.stats()
    assert (figures.people, figures.user_turns, figures.replies) == (1, 1, 1)
    assert store.corrections() == []  # Bob's correction was of a reply to Alice
    assert store.forget(ALICE).turns == 0


def test_the_registry_keeps_exactly_one_active_model(store: SqlStore) -> None:
    assert store.active_model() is None
    store.register_model("base", "/m/base.gguf", "SmolLM2", activate=True)
    store.register_model("tuned", "/m/tuned.gguf", "SmolLM2", metrics={"nll": 1.2})
    assert store.active_model() is not None and store.active_model().name == "base"  # type: ignore[union-attr]
    tuned = store.activate_model("tuned")
    assert tuned.active and tuned.metrics == {"nll": 1.2}
    assert [m.name for m in store.list_models() if m.active] == ["tuned"]
    with pytest.raises(NotFound):
        store.activate_model("missing")


def test_consent_is_recorded_even_before_the_first_message(store: SqlStore) -> None:
    store.set_consent(BOB, False)
    ask(store, BOB, "hello")
    store.set_consent(ALICE, True)
    store.set_consent(ALICE, None)
    with store.engine.connect() as connection:
        rows = dict(connection.execute(select(PersonRow.user_id, PersonRow.consent)).all())
    assert rows == {"200": False, "100": None}


# --- upserts: INSERT … ON CONFLICT in each dialect -----------------------------------


def at_once(works: list[Callable[[], T]]) -> list[T]:
    """Run each of ``works`` in a thread of its own, all released together; their results in order."""
    start = Barrier(len(works))

    def run(work: Callable[[], T]) -> T:
        start.wait()
        return work()

    with ThreadPoolExecutor(len(works)) as pool:
        return list(pool.map(run, works))


def people_rows(store: SqlStore, user_id: str) -> list[tuple[int, str | None]]:
    """The stored rows (id, display name) of one Telegram or Discord user id."""
    query = select(PersonRow.id, PersonRow.display_name).where(PersonRow.user_id == user_id)
    with store.engine.connect() as connection:
        return [(person_id, name) for person_id, name in connection.execute(query)]


def ratings_of(store: SqlStore, reply: int) -> list[tuple[int, int]]:
    query = select(RatingRow.person_id, RatingRow.value).where(RatingRow.turn_id == reply)
    with store.engine.connect() as connection:
        return [(person_id, value) for person_id, value in connection.execute(query)]


def test_two_presses_at_once_by_someone_new_store_one_person_and_one_rating(store: SqlStore) -> None:
    for round_ in range(5):  # a race lost once could still be won by chance
        _, reply = ask(store, ALICE, f"q{round_}")
        newcomer = Person("telegram", f"new-{round_}", "Newcomer")

        outcomes = at_once([partial(store.rate, newcomer, reply, 1)] * 2)

        assert set(outcomes) == {RatingOutcome.CREATED, RatingOutcome.UNCHANGED}
        ((person_id, name),) = people_rows(store, newcomer.user_id)
        assert name == "Newcomer"
        assert ratings_of(store, reply) == [(person_id, 1)]


def test_opposite_presses_at_once_leave_one_rating_with_the_later_value(store: SqlStore) -> None:
    _, reply = ask(store, ALICE, "q")

    outcomes = at_once([partial(store.rate, BOB, reply, 1), partial(store.rate, BOB, reply, -1)])

    assert set(outcomes) == {RatingOutcome.CREATED, RatingOutcome.CHANGED}
    later = (1, -1)[outcomes.index(RatingOutcome.CHANGED)]
    ((_, value),) = ratings_of(store, reply)
    assert value == later


def test_people_met_at_once_in_several_threads_are_stored_once(store: SqlStore) -> None:
    _, reply = ask(store, ALICE, "q")
    carol = Person("discord", "300", "Carol")

    ids = at_once([partial(store.add_correction, carol, reply, f"fix {n}") for n in range(4)])

    assert len(set(ids)) == 4
    assert {c.person for c in store.corrections()} == {carol}
    assert len(people_rows(store, "300")) == 1


def test_a_person_keeps_their_latest_name_and_their_consent(store: SqlStore) -> None:
    _, reply = ask(store, ALICE, "q")
    store.rate(Person("telegram", "200", "Bob"), reply, 1)
    store.set_consent(Person("telegram", "200"), True)  # no name: the stored one stays
    store.rate(Person("telegram", "200", "Robert"), reply, -1)
    store.rate(Person("telegram", "200", ""), reply, -1)

    ((bob_id, name),) = people_rows(store, "200")
    assert name == "Robert"
    speaker = speakers(store.engine, [bob_id])[bob_id]
    assert speaker.consent is True and speaker.person.display_name == "Robert"


def test_registering_a_model_again_repoints_it_and_keeps_what_was_not_given(store: SqlStore) -> None:
    store.register_model("tuned", "/m/old.gguf", "SmolLM2", metrics={"nll": 1.2}, activate=True)
    again = store.register_model("tuned", "/m/new.gguf")

    assert (again.gguf_path, again.base_model, again.metrics, again.active) == (
        "/m/new.gguf",
        "SmolLM2",
        {"nll": 1.2},
        True,
    )
    assert store.register_model("tuned", "/m/new.gguf", metrics={"nll": 0.9}).metrics == {"nll": 0.9}
    assert [m.name for m in store.list_models()] == ["tuned"]
