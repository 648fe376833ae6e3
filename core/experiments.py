"""A/B tests of model versions (or of two personas on the active one), judged by the people's 👍/👎.

An experiment serves a candidate version (persona) to a share of conversations and
the active version (the control persona) to the rest. The arm of a conversation is a hash of the
experiment and the conversation, so it is the same in every process and after
a restart. The figures come from a kept statistics library (statsmodels for the
intervals and the sample size, scipy for the bootstrap); nothing here computes
an interval by hand. statsmodels and scipy are imported inside the functions.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field


class Arm(enum.StrEnum):
    CONTROL = "control"  # the active version, whatever it is at the time of the reply
    CANDIDATE = "candidate"


class ExperimentKind(enum.StrEnum):
    MODEL = "model"  # the arms are model versions: the candidate against the active one
    PERSONA = "persona"  # the arms are two named personas, both on the active version


class Decision(enum.StrEnum):
    WAIT = "wait"  # fewer than the pre-set number of ratings, or of people rating, on an arm
    PROMOTE = "promote"  # the candidate is not worse by more than the margin
    ROLLBACK = "rollback"  # the candidate may be worse by more than the margin: the active version stays


# One person cannot fill an arm: with at most 5 of their ratings counted on an arm, the
# default 388 come from at least 78 people; 20 is the floor for a small test's --min-ratings.
DEFAULT_RATINGS_PER_PERSON = 5
DEFAULT_MIN_RATERS = 20


@dataclass(frozen=True)
class Experiment:
    id: int
    candidate: str  # model version name
    share: float  # of conversations that get the candidate, 0 < share < 1
    min_ratings: int  # per arm, fixed up front: the rule decides only once both arms have this many
    margin: float  # promote when the difference's lower bound is above -margin
    started_at: datetime
    control: str | None = None  # the version active when it started
    started_by: str | None = None
    ended_at: datetime | None = None
    decision: Decision | None = None
    decided_by: str | None = None
    report: dict[str, object] = field(default_factory=dict)  # the figures it ended with
    # How the store counts (``ABConfig``): one person's ratings beyond the first
    # ``ratings_per_person`` on an arm are left out, and the rule waits for ``min_raters`` people an arm.
    ratings_per_person: int = DEFAULT_RATINGS_PER_PERSON
    min_raters: int = DEFAULT_MIN_RATERS
    # A persona experiment: ``control`` and ``candidate`` name personas, not model versions.
    kind: ExperimentKind = ExperimentKind.MODEL

    @property
    def running(self) -> bool:
        return self.ended_at is None

    def arm_name(self, arm: Arm) -> str | None:
        """What the arm serves: a persona, or a version (the control's: the one active at the start)."""
        return self.candidate if arm is Arm.CANDIDATE else self.control


@dataclass(frozen=True)
class ArmCounts:
    """What one arm served, counted by the store."""

    conversations: int = 0
    replies: int = 0
    rated_replies: int = 0
    versions: tuple[
        str, ...
    ] = ()  # the model versions (a persona experiment: "name vN") that wrote its replies
    all_ratings: int = 0  # counted or not: those past a person's share on the arm are left out of the figures
    memory_served: int = 0  # replies the correction memory served: no arm wrote them, in no figure above


@dataclass(frozen=True)
class ArmRating:
    """One person's rating of one reply written in an experiment, as the rule counts it."""

    conversation_id: int
    arm: Arm
    up: bool
    rater: int  # who rated: the store's id of the person, the same on every arm


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class ArmSummary:
    arm: Arm
    counts: ArmCounts
    ratings: int  # counted: at most the experiment's ratings_per_person from one person
    raters: int  # distinct people among them
    ups: int
    up_share: float | None  # None before the first rating
    interval: Interval | None  # Wilson 95 %

    @property
    def rated_share(self) -> float | None:
        """Of the arm's replies, how many someone rated."""
        return self.counts.rated_replies / self.counts.replies if self.counts.replies else None


@dataclass(frozen=True)
class Comparison:
    """Candidate minus control 👍 share."""

    difference: float
    newcombe: Interval  # 95 %, treats ratings as independent
    bootstrap: Interval | None  # 95 %, resampling whole conversations; None with < 2 conversations an arm


@dataclass(frozen=True)
class ABReport:
    experiment: Experiment
    control: ArmSummary
    candidate: ArmSummary
    comparison: Comparison | None  # None until both arms have a rating
    reached: bool  # both arms have min_ratings, from at least min_raters people each
    decision: Decision  # what the rule would decide now

    def to_json(self) -> dict[str, object]:
        """The figures as plain JSON (``iris models ab status --json`` and the stored report).

        Floats are rounded to 4 decimals; times are ISO 8601; enums are their values.
        """
        e = self.experiment
        comparison: dict[str, object] | None = None
        if self.comparison is not None:
            c = self.comparison
            comparison = {
                "difference": _round(c.difference),
                "newcombe": _interval_json(c.newcombe),
                "bootstrap": _interval_json(c.bootstrap),
            }
        return {
            "experiment": {
                "id": e.id,
                "kind": e.kind.value,
                "candidate": e.candidate,
                "control": e.control,
                "share": _round(e.share),
                "min_ratings": e.min_ratings,
                "min_raters": e.min_raters,
                "ratings_per_person": e.ratings_per_person,
                "margin": _round(e.margin),
                "started_at": e.started_at.isoformat(),
                "ended_at": e.ended_at.isoformat() if e.ended_at is not None else None,
                "decision": e.decision.value if e.decision is not None else None,
            },
            "arms": {
                Arm.CONTROL.value: _arm_json(self.control, e.arm_name(Arm.CONTROL)),
                Arm.CANDIDATE.value: _arm_json(self.candidate, e.arm_name(Arm.CANDIDATE)),
            },
            "comparison": comparison,
            "reached": self.reached,
            "decision": self.decision.value,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _interval_json(interval: Interval | None) -> list[float | None] | None:
    return None if interval is None else [_round(interval.low), _round(interval.high)]


def _arm_json(summary: ArmSummary, name: str | None) -> dict[str, object]:
    return {
        "name": name,  # the persona, or the model version (the control's: the one active at the start)
        "conversations": summary.counts.conversations,
        "replies": summary.counts.replies,
        "rated_replies": summary.counts.rated_replies,
        "rated_share": _round(summary.rated_share),
        "ratings": summary.ratings,
        "all_ratings": summary.counts.all_ratings,
        "raters": summary.raters,
        "ups": summary.ups,
        "up_share": _round(summary.up_share),
        "interval": _interval_json(summary.interval),
        "versions": list(summary.counts.versions),
        "memory_served": summary.counts.memory_served,
    }


DEFAULT_MARGIN = 0.10
DEFAULT_SHARE = 0.2
DEFAULT_PERSONA_SHARE = 0.5  # two personas an admin wrote: no safer side, and both arms fill at one pace
DEFAULT_BASELINE = 0.5  # the worst case: a 👍 share of one half has the largest variance
# required_ratings(DEFAULT_BASELINE, DEFAULT_MARGIN), power 0.8, alpha 0.05: the ratings an arm needs so
# that the rule detects, with 80 % power, that an equally good candidate is not worse by 10 points.
DEFAULT_MIN_RATINGS = 388


@dataclass(frozen=True)
class ABConfig:
    """``IRIS_AB_*``: promote when the candidate's 👍 share is, at 95 %, not worse than the active
    version's by more than ``margin``, once both arms have ``min_ratings`` from at least
    ``min_raters`` people, counting at most ``ratings_per_person`` of one person's ratings on an
    arm (how they were chosen: docs/ab.md)."""

    margin: float = DEFAULT_MARGIN
    min_ratings: int = DEFAULT_MIN_RATINGS
    ratings_per_person: Annotated[int, Field(ge=1)] = DEFAULT_RATINGS_PER_PERSON
    min_raters: Annotated[int, Field(ge=1)] = DEFAULT_MIN_RATERS


def arm_for(experiment: Experiment, conversation_id: int) -> Arm:
    """The conversation's arm: sticky, the same in every process, candidate for about ``share`` of them.

    sha256 of ``"{experiment id}:{conversation id}"``; its first 8 bytes, read as an unsigned
    big-endian integer over 2**64, are a uniform number u in [0, 1): candidate when u < share.
    (Python's ``hash`` is salted per process, so it would not be sticky.)
    """
    digest = hashlib.sha256(f"{experiment.id}:{conversation_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return Arm.CANDIDATE if u < experiment.share else Arm.CONTROL


BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def report(
    experiment: Experiment,
    counts: Mapping[Arm, ArmCounts],
    ratings: Sequence[ArmRating],
    *,
    seed: int = 0,
) -> ABReport:
    """The per-arm figures, the comparison and the decision the rule takes now.

    Per arm: the 👍 share and its Wilson 95 % interval. The comparison (candidate minus
    control, once both arms have a rating) has two 95 % intervals: Newcombe's, which treats
    every rating as independent, and a percentile cluster bootstrap that resamples whole
    conversations (the ratings within a conversation are not independent), seeded with
    ``seed`` so a report is reproducible; it is None while an arm has fewer than 2 rated
    conversations.

    ``ratings`` are the ones the rule counts (the store leaves out a person's ratings past
    ``experiment.ratings_per_person`` on an arm). The rule: WAIT until both arms have
    ``experiment.min_ratings`` ratings from at least ``experiment.min_raters`` people (fixed up
    front; it never stops early). Then PROMOTE when the lower bound of the difference is above
    ``-experiment.margin``, else ROLLBACK, where the lower bound is the lower (the more
    conservative) of the Newcombe and the bootstrap lower bounds, or Newcombe's alone when
    there is no bootstrap interval.
    """
    control = _summary(Arm.CONTROL, counts, ratings)
    candidate = _summary(Arm.CANDIDATE, counts, ratings)
    comparison = _compare(ratings, candidate, control, seed) if candidate.ratings and control.ratings else None
    reached = comparison is not None and sample_complete(experiment, ratings)
    decision = Decision.WAIT
    if reached and comparison is not None:
        lower = comparison.newcombe.low
        if comparison.bootstrap is not None:
            lower = min(lower, comparison.bootstrap.low)
        decision = Decision.PROMOTE if lower > -experiment.margin else Decision.ROLLBACK
    return ABReport(
        experiment=experiment,
        control=control,
        candidate=candidate,
        comparison=comparison,
        reached=reached,
        decision=decision,
    )


def sample_complete(experiment: Experiment, ratings: Sequence[ArmRating]) -> bool:
    """Whether both arms have ``min_ratings`` counted ratings from at least ``min_raters`` people."""
    for arm in Arm:
        raters = [r.rater for r in ratings if r.arm is arm]
        if len(raters) < experiment.min_ratings or len(set(raters)) < experiment.min_raters:
            return False
    return True


def _summary(arm: Arm, counts: Mapping[Arm, ArmCounts], ratings: Sequence[ArmRating]) -> ArmSummary:
    mine = [r for r in ratings if r.arm == arm]
    n = len(mine)
    ups = sum(1 for r in mine if r.up)
    interval: Interval | None = None
    if n:
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(ups, n, alpha=1 - CONFIDENCE, method="wilson")
        interval = Interval(float(low), float(high))
    return ArmSummary(
        arm=arm,
        counts=counts.get(arm, ArmCounts()),
        ratings=n,
        raters=len({r.rater for r in mine}),
        ups=ups,
        up_share=ups / n if n else None,
        interval=interval,
    )


def _compare(ratings: Sequence[ArmRating], candidate: ArmSummary, control: ArmSummary, seed: int) -> Comparison:
    from statsmodels.stats.proportion import confint_proportions_2indep

    assert candidate.up_share is not None and control.up_share is not None
    low, high = confint_proportions_2indep(
        candidate.ups,
        candidate.ratings,
        control.ups,
        control.ratings,
        method="newcomb",
        compare="diff",
        alpha=1 - CONFIDENCE,
    )
    return Comparison(
        difference=candidate.up_share - control.up_share,
        newcombe=Interval(float(low), float(high)),
        bootstrap=_cluster_bootstrap(ratings, seed),
    )


def _conversations(ratings: Sequence[ArmRating], arm: Arm) -> tuple[list[int], list[int]]:
    """Per rated conversation of the arm: its 👍 count and its rating count."""
    per: dict[int, list[int]] = {}
    for r in ratings:
        if r.arm == arm:
            tally = per.setdefault(r.conversation_id, [0, 0])
            tally[0] += int(r.up)
            tally[1] += 1
    return [t[0] for t in per.values()], [t[1] for t in per.values()]


def _cluster_bootstrap(ratings: Sequence[ArmRating], seed: int) -> Interval | None:
    """Percentile bootstrap of the difference, resampling whole conversations within each arm."""
    cand_ups, cand_n = _conversations(ratings, Arm.CANDIDATE)
    ctrl_ups, ctrl_n = _conversations(ratings, Arm.CONTROL)
    if len(cand_n) < 2 or len(ctrl_n) < 2:
        return None

    import numpy as np
    from scipy import stats

    c_ups, c_n = np.asarray(cand_ups, dtype=float), np.asarray(cand_n, dtype=float)
    k_ups, k_n = np.asarray(ctrl_ups, dtype=float), np.asarray(ctrl_n, dtype=float)

    def difference(cand: Any, ctrl: Any, axis: int = -1) -> Any:
        # The samples are conversation indices, on the last axis with any leading batch shape.
        ci = np.asarray(cand).astype(np.intp)
        ki = np.asarray(ctrl).astype(np.intp)
        return c_ups[ci].sum(axis=-1) / c_n[ci].sum(axis=-1) - k_ups[ki].sum(axis=-1) / k_n[ki].sum(axis=-1)

    result = stats.bootstrap(
        (np.arange(len(c_n), dtype=float), np.arange(len(k_n), dtype=float)),
        difference,
        vectorized=True,
        axis=-1,
        paired=False,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        confidence_level=CONFIDENCE,
        rng=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return Interval(low, high)


def required_ratings(baseline: float, margin: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Ratings per arm for the rule to promote an equally good candidate with ``power``.

    Both arms truly at ``baseline``: the lower bound of the two-sided ``1 - alpha`` interval of
    the difference must be above ``-margin``, a one-sided test at ``alpha / 2`` against a
    candidate worse by ``margin`` (Cohen's h of ``baseline`` and ``baseline - margin``, the
    normal approximation of statsmodels' ``NormalIndPower``), rounded up.
    """
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    effect = proportion_effectsize(baseline, baseline - margin)
    n = NormalIndPower().solve_power(
        effect_size=effect, alpha=alpha / 2, power=power, ratio=1.0, alternative="larger"
    )
    return math.ceil(float(n))
