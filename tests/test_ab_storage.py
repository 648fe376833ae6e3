"""Experiments in the database, on SQLite and PostgreSQL: one at a time, ended once, counted per arm."""

from __future__ import annotations

import pytest

from core.domain import ChatRef, Person, Timings
from core.experiments import Arm, Decision
from storage.experiments import ExperimentRefused, SqlExperiments
from storage.repository import SqlStore

ALICE, BOB = Person("test", "alice"), Person("test", "bob")


def reply_in(store: SqlStore, chat: str, version: str, experiment: tuple[int, Arm] | None) -> tuple[int, int]:
    receipt = store.record_user_turn(
        ChatRef("test", chat), ALICE, text="hi", from_voice=False, message_id=None, shared_history=False
    )
    turn = store.record_reply(receipt.conversation_id, receipt.turn_id, "hello", version, Timings(), experiment)
    return receipt.conversation_id, turn


def test_one_experiment_runs_at_a_time_and_ends_once(store: SqlStore) -> None:
    store.register_model("active", "/a.gguf", activate=True)
    store.register_model("new", "/b.gguf")
    experiments = SqlExperiments(store.engine)
    with pytest.raises(ExperimentRefused, match="no model version named"):
        experiments.start_experiment("missing", 0.2, 10, 0.1, "test")
    with pytest.raises(ExperimentRefused, match="active version already"):
        experiments.start_experiment("active", 0.2, 10, 0.1, "test")
    with pytest.raises(ExperimentRefused, match="between 0 and 1"):
        experiments.start_experiment("new", 1.0, 10, 0.1, "test")

    started = experiments.start_experiment("new", 0.2, 10, 0.1, "console:ops")
    assert (started.candidate, started.control, started.running) == ("new", "active", True)
    with pytest.raises(ExperimentRefused, match="is running"):
        experiments.start_experiment("new", 0.2, 10, 0.1, "test")
    assert experiments.running_experiment() == started

    ended = experiments.end_experiment(started.id, Decision.ROLLBACK, "console:ops", {"decision": "rollback"})
    assert ended is not None and ended.decision is Decision.ROLLBACK and not ended.running
    assert experiments.end_experiment(started.id, Decision.PROMOTE, "late", {}) is None  # decided once
    assert experiments.running_experiment() is None
    assert experiments.latest_experiment() == ended
    again = experiments.start_experiment("new", 0.5, 10, 0.1, "test")  # the next one may start
    assert again.id != started.id


def test_replies_and_ratings_are_counted_on_their_arm(store: SqlStore) -> None:
    store.register_model("active", "/a.gguf", activate=True)
    store.register_model("new", "/b.gguf")
    experiments = SqlExperiments(store.engine)
    experiment = experiments.start_experiment("new", 0.5, 10, 0.1, "test")
    control = (experiment.id, Arm.CONTROL)
    candidate = (experiment.id, Arm.CANDIDATE)
    c1, r1 = reply_in(store, "one", "active", control)
    c2, r2 = reply_in(store, "two", "new", candidate)
    _, r3 = reply_in(store, "two", "new", candidate)
    reply_in(store, "three", "active", None)  # before the experiment or outside it: not counted
    store.rate(ALICE, r1, 1)
    store.rate(BOB, r1, -1)
    store.rate(ALICE, r2, 1)

    counts = experiments.arm_counts(experiment.id)
    assert (counts[Arm.CONTROL].conversations, counts[Arm.CONTROL].replies) == (1, 1)
    assert counts[Arm.CONTROL].rated_replies == 1 and counts[Arm.CONTROL].versions == ("active",)
    assert (counts[Arm.CANDIDATE].conversations, counts[Arm.CANDIDATE].replies) == (1, 2)
    assert counts[Arm.CANDIDATE].rated_replies == 1 and counts[Arm.CANDIDATE].versions == ("new",)
    ratings = sorted(experiments.arm_ratings(experiment.id), key=lambda r: (r.arm, r.up))
    assert [(r.conversation_id, r.arm, r.up) for r in ratings] == [
        (c2, Arm.CANDIDATE, True),
        (c1, Arm.CONTROL, False),
        (c1, Arm.CONTROL, True),
    ]
    alice = ratings[0].rater
    assert ratings[2].rater == alice and ratings[1].rater != alice  # the same person on both arms
    assert r3 > r2
