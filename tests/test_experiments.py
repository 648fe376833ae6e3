"""The A/B test's arithmetic: sticky arms, intervals that cover, and the rule's decisions."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np

from core.experiments import (
    DEFAULT_BASELINE,
    DEFAULT_MARGIN,
    DEFAULT_MIN_RATINGS,
    Arm,
    ArmCounts,
    ArmRating,
    Decision,
    Experiment,
    arm_for,
    report,
    required_ratings,
)

STARTED = datetime(2026, 12, 4, tzinfo=UTC)


def experiment(
    id: int = 1, share: float = 0.5, min_ratings: int = 200, margin: float = 0.10, min_raters: int = 20
) -> Experiment:
    return Experiment(
        id=id,
        candidate="v2",
        share=share,
        min_ratings=min_ratings,
        margin=margin,
        started_at=STARTED,
        min_raters=min_raters,
    )


def rated(
    rng: np.random.Generator,
    arm: Arm,
    rate: float,
    n: int,
    per_conversation: int = 3,
    first_conversation: int = 0,
    clustered: bool = False,
) -> list[ArmRating]:
    """n ratings at a true 👍 rate, ``per_conversation`` to a conversation, one person to a conversation.

    Independent draws per rating, or (``clustered``) one draw per conversation that all its
    ratings share.
    """
    out: list[ArmRating] = []
    conversation_up = False
    for i in range(n):
        conversation, position = divmod(i, per_conversation)
        if clustered:
            if position == 0:
                conversation_up = bool(rng.random() < rate)
            up = conversation_up
        else:
            up = bool(rng.random() < rate)
        number = first_conversation + conversation
        out.append(ArmRating(conversation_id=number, arm=arm, up=up, rater=number))
    return out


def two_arms(
    rng: np.random.Generator,
    control: float,
    candidate: float,
    n: int,
    per_conversation: int = 3,
    clustered: bool = False,
) -> list[ArmRating]:
    """n ratings an arm; the arms' conversations are distinct."""
    return rated(rng, Arm.CONTROL, control, n, per_conversation, clustered=clustered) + rated(
        rng, Arm.CANDIDATE, candidate, n, per_conversation, first_conversation=100_000, clustered=clustered
    )


# --- arms ---------------------------------------------------------------------------------------


def test_arm_is_sticky_across_calls_and_equal_experiments() -> None:
    first = experiment(id=7, share=0.3)
    rebuilt = experiment(id=7, share=0.3)
    arms = [arm_for(first, c) for c in range(1, 301)]
    assert arms == [arm_for(first, c) for c in range(1, 301)]
    assert arms == [arm_for(rebuilt, c) for c in range(1, 301)]
    assert Arm.CANDIDATE in arms and Arm.CONTROL in arms


def test_another_experiment_reshuffles_the_arms() -> None:
    one, other = experiment(id=1), experiment(id=2)
    moved = sum(arm_for(one, c) != arm_for(other, c) for c in range(1, 301))
    assert moved > 0
    assert 100 < moved < 200  # independent halves: about half move


def test_the_candidate_gets_about_its_share() -> None:
    for share in (0.2, 0.5):
        e = experiment(id=3, share=share)
        candidates = sum(arm_for(e, c) == Arm.CANDIDATE for c in range(1, 1001))
        tolerance = 4 * math.sqrt(1000 * share * (1 - share))
        assert abs(candidates - 1000 * share) <= tolerance, (share, candidates)


# --- intervals ----------------------------------------------------------------------------------


def test_intervals_cover_the_true_rates() -> None:
    rng = np.random.default_rng(7)
    runs, n = 200, 150
    control_rate, candidate_rate = 0.55, 0.65
    truth = candidate_rate - control_rate
    wilson_control = wilson_candidate = newcombe = bootstrap = 0
    for run in range(runs):
        r = report(experiment(), {}, two_arms(rng, control_rate, candidate_rate, n), seed=run)
        assert r.control.interval is not None and r.candidate.interval is not None
        assert r.comparison is not None and r.comparison.bootstrap is not None
        wilson_control += r.control.interval.low <= control_rate <= r.control.interval.high
        wilson_candidate += r.candidate.interval.low <= candidate_rate <= r.candidate.interval.high
        newcombe += r.comparison.newcombe.low <= truth <= r.comparison.newcombe.high
        bootstrap += r.comparison.bootstrap.low <= truth <= r.comparison.bootstrap.high
    assert wilson_control >= 0.90 * runs
    assert wilson_candidate >= 0.90 * runs
    assert newcombe >= 0.90 * runs
    assert bootstrap >= 0.85 * runs


def test_the_bootstrap_widens_when_the_conversation_decides() -> None:
    rng = np.random.default_rng(7)
    ratings = two_arms(rng, 0.5, 0.5, 400, per_conversation=10, clustered=True)
    r = report(experiment(), {}, ratings, seed=1)
    assert r.comparison is not None and r.comparison.bootstrap is not None
    newcombe = r.comparison.newcombe.high - r.comparison.newcombe.low
    bootstrap = r.comparison.bootstrap.high - r.comparison.bootstrap.low
    assert bootstrap >= 1.5 * newcombe


def test_the_report_is_reproducible_with_a_seed() -> None:
    ratings = two_arms(np.random.default_rng(7), 0.5, 0.6, 60)
    assert report(experiment(), {}, ratings, seed=3) == report(experiment(), {}, ratings, seed=3)


# --- decisions ----------------------------------------------------------------------------------


def test_a_clearly_better_candidate_is_promoted() -> None:
    r = report(experiment(min_ratings=200), {}, two_arms(np.random.default_rng(7), 0.5, 0.8, 300))
    assert r.reached
    assert r.decision == Decision.PROMOTE


def test_a_clearly_worse_candidate_is_rolled_back() -> None:
    r = report(experiment(min_ratings=200), {}, two_arms(np.random.default_rng(7), 0.7, 0.35, 300))
    assert r.reached
    assert r.decision == Decision.ROLLBACK


def test_the_rule_never_stops_early() -> None:
    r = report(experiment(min_ratings=400), {}, two_arms(np.random.default_rng(7), 0.5, 0.8, 300))
    assert not r.reached
    assert r.comparison is not None
    assert r.decision == Decision.WAIT


def test_the_default_sample_has_the_power_and_error_the_docs_claim() -> None:
    """At the default sample (388 an arm) and margin, with ratings from many conversations:
    an equally good candidate is promoted about 80 % of the time (a little less: the rule
    takes the lower of two bounds), one truly worse by the margin about 2.5 % of the time."""
    rng = np.random.default_rng(11)
    runs, n = 150, DEFAULT_MIN_RATINGS
    rule = experiment(min_ratings=n, margin=DEFAULT_MARGIN)
    equal = sum(
        report(rule, {}, two_arms(rng, 0.5, 0.5, n, per_conversation=2), seed=run).decision is Decision.PROMOTE
        for run in range(runs)
    )
    worse = sum(
        report(rule, {}, two_arms(rng, 0.5, 0.4, n, per_conversation=2), seed=run).decision is Decision.PROMOTE
        for run in range(runs)
    )
    assert 0.65 * runs <= equal <= 0.92 * runs, equal
    assert worse <= 0.07 * runs, worse


def test_one_arm_short_waits() -> None:
    rng = np.random.default_rng(7)
    ratings = rated(rng, Arm.CONTROL, 0.5, 600) + rated(rng, Arm.CANDIDATE, 0.8, 50, first_conversation=10_000)
    r = report(experiment(min_ratings=200), {}, ratings)
    assert not r.reached
    assert r.decision == Decision.WAIT


def test_too_few_people_wait_whatever_the_number_of_ratings() -> None:
    """300 ratings an arm from 10 people each (30 apiece) reach the sample but not the people."""
    ratings = two_arms(np.random.default_rng(7), 0.5, 0.8, 300, per_conversation=30)
    few = report(experiment(min_ratings=200, min_raters=11), {}, ratings)
    assert (few.control.raters, few.candidate.raters) == (10, 10)
    assert few.control.ratings == 300 and not few.reached and few.decision is Decision.WAIT
    enough = report(experiment(min_ratings=200, min_raters=10), {}, ratings)
    assert enough.reached and enough.decision is Decision.PROMOTE


def test_a_single_conversation_an_arm_has_no_bootstrap() -> None:
    ratings = [
        ArmRating(1, Arm.CONTROL, True, rater=1),
        ArmRating(1, Arm.CONTROL, False, rater=1),
        ArmRating(2, Arm.CANDIDATE, True, rater=2),
    ]
    r = report(experiment(min_ratings=1, min_raters=1), {}, ratings)
    assert r.comparison is not None
    assert r.comparison.bootstrap is None
    assert r.comparison.difference == 0.5
    assert r.reached  # decided on Newcombe's interval alone
    assert r.decision == Decision.ROLLBACK


# --- the empty experiment and JSON --------------------------------------------------------------


def test_an_empty_experiment_reports_and_waits() -> None:
    r = report(experiment(), {}, [])
    assert r.control.up_share is None and r.candidate.up_share is None
    assert r.control.interval is None and r.control.rated_share is None
    assert r.comparison is None
    assert not r.reached
    assert r.decision == Decision.WAIT
    out = r.to_json()
    json.dumps(out)
    assert out["comparison"] is None
    assert out["decision"] == "wait"


def test_to_json_holds_the_figures() -> None:
    counts = {
        Arm.CONTROL: ArmCounts(conversations=40, replies=300, rated_replies=150, versions=("v1",)),
        Arm.CANDIDATE: ArmCounts(conversations=40, replies=300, rated_replies=150, versions=("v2",)),
    }
    r = report(experiment(min_ratings=100), counts, two_arms(np.random.default_rng(7), 0.5, 0.6, 150))
    out = r.to_json()
    assert json.loads(json.dumps(out)) == out
    arms = out["arms"]
    assert isinstance(arms, dict)
    control = arms["control"]
    assert control["rated_share"] == 0.5
    assert control["versions"] == ["v1"]
    assert control["ratings"] == 150 and control["raters"] == 50  # three ratings to a conversation and person
    assert isinstance(control["interval"], list) and len(control["interval"]) == 2
    comparison = out["comparison"]
    assert isinstance(comparison, dict)
    assert set(comparison) == {"difference", "newcombe", "bootstrap"}
    assert comparison["difference"] == round(comparison["difference"], 4)
    e = out["experiment"]
    assert isinstance(e, dict)
    assert e["started_at"] == "2026-12-04T00:00:00+00:00"
    assert e["ended_at"] is None and e["decision"] is None
    assert (e["min_raters"], e["ratings_per_person"]) == (20, 5)
    assert out["decision"] == r.decision.value
    assert out["reached"] is True


# --- sample size --------------------------------------------------------------------------------


def test_the_default_min_ratings_is_the_required_ratings() -> None:
    assert required_ratings(DEFAULT_BASELINE, DEFAULT_MARGIN) == DEFAULT_MIN_RATINGS


def test_a_smaller_margin_needs_more_ratings() -> None:
    assert required_ratings(0.5, 0.05) > required_ratings(0.5, 0.10) > required_ratings(0.5, 0.20)
