"""Many people decide an A/B test, not one: the per-person cap, the distinct raters, the press limit.

On SQLite and PostgreSQL: the cap is applied by the database query, so every process
counts the same ratings.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.app import App
from bots.cli import app as cli_app
from core.ab import decide_if_due, experiment_report
from core.domain import ChatRef, Person, Timings
from core.experiments import ABConfig, Arm, Decision, Experiment
from core.feedback import FeedbackLimited
from core.limits import RateLimits
from core.service import ChatService
from storage.experiments import SqlExperiments
from storage.repository import SqlStore

MALLORY = Person("telegram", "666", "Mallory")
START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def crowd(count: int, start: int = 0) -> list[Person]:
    return [Person("telegram", str(1000 + n), f"Person {n}") for n in range(start, start + count)]


def replies(store: SqlStore, experiment: Experiment, arm: Arm, count: int, chat: str) -> list[int]:
    """``count`` replies written on ``arm``, in one conversation."""
    ids = []
    for _ in range(count):
        receipt = store.record_user_turn(
            ChatRef("telegram", chat),
            MALLORY,
            text="hi",
            from_voice=False,
            message_id=None,
            shared_history=False,
        )
        ids.append(
            store.record_reply(
                receipt.conversation_id, receipt.turn_id, "hello", arm.value, Timings(), (experiment.id, arm)
            )
        )
    return ids


def running(store: SqlStore, rules: ABConfig, min_ratings: int) -> tuple[SqlExperiments, Experiment]:
    store.register_model("active", "/a.gguf", activate=True)
    store.register_model("candidate", "/b.gguf")
    experiments = SqlExperiments(store.engine, rules)
    return experiments, experiments.start_experiment("candidate", 0.5, min_ratings, 0.1, "test")


def test_one_person_rating_200_replies_counts_five_and_decides_nothing(store: SqlStore) -> None:
    experiments, experiment = running(store, ABConfig(), min_ratings=5)
    for turn in replies(store, experiment, Arm.CANDIDATE, 200, "mallory"):
        store.rate(MALLORY, turn, 1)
    honest = replies(store, experiment, Arm.CONTROL, 30, "honest")
    for person, turn in zip(crowd(30), honest, strict=True):
        store.rate(person, turn, -1)

    counted = experiments.arm_ratings(experiment.id)
    mallorys = [r for r in counted if r.arm is Arm.CANDIDATE]
    assert len(mallorys) == 5 and len({r.rater for r in mallorys}) == 1
    figures = experiment_report(experiments, experiment)
    assert (figures.candidate.ratings, figures.candidate.raters) == (5, 1)
    assert figures.candidate.counts.all_ratings == 200  # stored, but not counted
    assert (figures.control.ratings, figures.control.raters) == (30, 30)
    assert figures.to_json()["arms"]["candidate"]["raters"] == 1  # type: ignore[index]

    # Both arms hold the 5 ratings the experiment was started for: one person is not enough.
    assert decide_if_due(experiments, store, store) is None
    assert figures.decision is Decision.WAIT and not figures.reached
    still = experiments.running_experiment()
    assert still is not None and still.id == experiment.id
    active = store.active_model()
    assert active is not None and active.name == "active"


def test_fewer_people_than_the_minimum_never_decide_then_one_more_does(store: SqlStore) -> None:
    experiments, experiment = running(store, ABConfig(ratings_per_person=5, min_raters=3), min_ratings=4)
    control = replies(store, experiment, Arm.CONTROL, 11, "control")
    candidate = replies(store, experiment, Arm.CANDIDATE, 11, "candidate")
    for n, person in enumerate(crowd(2)):  # two people, five ratings each on each arm: 10 an arm
        for turn in control[n * 5 : n * 5 + 5]:
            store.rate(person, turn, -1)
        for turn in candidate[n * 5 : n * 5 + 5]:
            store.rate(person, turn, 1)
            assert decide_if_due(experiments, store, store) is None
    figures = experiment_report(experiments, experiment)
    assert (figures.control.ratings, figures.control.raters) == (10, 2)
    assert not figures.reached and figures.decision is Decision.WAIT

    third = crowd(1, start=2)[0]
    store.rate(third, control[10], -1)
    assert decide_if_due(experiments, store, store) is None  # the candidate arm has two people still
    store.rate(third, candidate[10], 1)
    ended = decide_if_due(experiments, store, store)
    assert ended is not None and ended.decision is Decision.PROMOTE and ended.decided_by == "ab-rule"
    active = store.active_model()
    assert active is not None and active.name == "candidate"


def test_many_people_decide_as_before(store: SqlStore) -> None:
    experiments, experiment = running(store, ABConfig(), min_ratings=20)  # the default 20 people an arm
    control = replies(store, experiment, Arm.CONTROL, 20, "control")
    candidate = replies(store, experiment, Arm.CANDIDATE, 20, "candidate")
    for person, worse, better in zip(crowd(20), control, candidate, strict=True):
        store.rate(person, worse, -1)
        store.rate(person, better, 1)
    ended = decide_if_due(experiments, store, store)
    assert ended is not None and ended.decision is Decision.PROMOTE
    assert ended.report["arms"]["candidate"]["raters"] == 20  # type: ignore[index]


def test_ab_status_shows_the_distinct_raters(store: SqlStore, database_url: str, tmp_path: Path) -> None:
    _, experiment = running(store, ABConfig(), min_ratings=50)
    for turn in replies(store, experiment, Arm.CANDIDATE, 12, "mallory"):
        store.rate(MALLORY, turn, 1)
    for person, turn in zip(crowd(3), replies(store, experiment, Arm.CONTROL, 3, "c"), strict=True):
        store.rate(person, turn, 1)
    env = {"DATABASE_URL": database_url, "IRIS_DATA_DIR": str(tmp_path / "data"), "IRIS_AB_MIN_RATERS": "7"}

    shown = CliRunner().invoke(cli_app, ["models", "ab", "status", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    assert (status["experiment"]["min_raters"], status["experiment"]["ratings_per_person"]) == (7, 5)
    candidate, control = status["arms"]["candidate"], status["arms"]["control"]
    assert (candidate["ratings"], candidate["all_ratings"], candidate["raters"]) == (5, 12, 1)
    assert (control["ratings"], control["raters"]) == (3, 3)

    text = CliRunner().invoke(cli_app, ["models", "ab", "status"], env=env).output
    assert "5/50 ratings (7 more not counted: over 5 a person) from 1/7 people" in text
    assert "3/50 ratings from 3/7 people" in text


# --- presses and corrections are limited like messages -----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def limited(app: App, clock: Clock, **limits: int) -> ChatService:
    config = replace(app.service.config, limits=RateLimits(**limits), exempt=frozenset({"900"}))
    return ChatService(app.store, app.transcriber, app.generator, config, clock=clock)


def shown_replies(app: App, count: int) -> tuple[ChatRef, list[int]]:
    chat = ChatRef("telegram", MALLORY.user_id)
    ids = []
    for _ in range(count):
        receipt = app.store.record_user_turn(
            chat, MALLORY, text="hi", from_voice=False, message_id=None, shared_history=False
        )
        ids.append(app.store.record_reply(receipt.conversation_id, receipt.turn_id, "hello", "v", Timings()))
    return chat, ids


def stored_ratings(app: App) -> list[int]:
    from sqlalchemy import select

    from storage.tables import RatingRow

    with app.store.engine.connect() as connection:
        return list(connection.scalars(select(RatingRow.value).order_by(RatingRow.id)))


async def test_presses_faster_than_the_limit_are_refused_and_not_stored(app: App) -> None:
    clock = Clock()
    service = limited(app, clock, presses_per_hour=3)
    chat, turns = shown_replies(app, 5)
    await service.feedback.rate(MALLORY, turns[0], up=True, where=chat)
    await service.feedback.rate(MALLORY, turns[0], up=False, where=chat)  # a changed rating is a press too
    await service.feedback.rate(MALLORY, turns[1], up=True, where=chat)
    with pytest.raises(FeedbackLimited) as refused:
        await service.feedback.rate(MALLORY, turns[2], up=True, where=chat)
    assert str(refused.value) == (
        "You have pressed 👍/👎 3 times in the last hour, my limit per person. "
        "Please come back in 60 minutes (at 09:00 UTC)."
    )
    assert stored_ratings(app) == [-1, 1]

    await service.feedback.rate(Person("telegram", "900"), turns[3], up=True, where=chat)  # admins are exempt
    clock.now += 3600
    await service.feedback.rate(MALLORY, turns[2], up=True, where=chat)
    assert len(stored_ratings(app)) == 4


async def test_corrections_faster_than_the_limit_are_refused_and_not_stored(app: App) -> None:
    clock = Clock()
    service = limited(app, clock, corrections_per_hour=2)
    chat, turns = shown_replies(app, 3)
    for turn in turns[:2]:
        await service.feedback.correct(MALLORY, turn, "A better answer.", where=chat)
    with pytest.raises(FeedbackLimited, match="You have sent me 2 better answers in the last hour"):
        await service.feedback.correct(MALLORY, turns[2], "A better answer.", where=chat)
    assert len(app.store.corrections()) == 2
