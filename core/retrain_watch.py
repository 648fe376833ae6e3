"""A retrain as a page shows it while it runs and once it ended, and the port that starts and reads one.

The run itself is another process (``iris retrain``) that writes its state to files: whoever
reads it (the web console's Retrain page) sees the same run after a reload or a restart, and
also a run typed in a terminal. ``finetune.run_watch`` implements ``RetrainRuns``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# The admin a started run audits its start and outcome as (``iris retrain`` reads it; the
# console sets web:<name>); unset: the terminal's user.
ACTOR_ENV = "IRIS_AUDIT_ACTOR"

# How a run stands; "running"/"starting" go on, the others ended.
GOING_ON = ("starting", "running")


class RetrainRefused(RuntimeError):
    """A run could not be started; ``str(error)`` is the sentence to show."""


@dataclass(frozen=True)
class StepView:
    name: str
    state: str  # "done", "running", "waiting" or "stopped" (where a run that ended stopped)
    seconds: float | None = None


@dataclass(frozen=True)
class LossCurve:
    """One training stage's loss by step, as far as it got."""

    stage: str
    points: tuple[tuple[int, float], ...]
    max_steps: int | None = None


@dataclass(frozen=True)
class FactView:
    """A taught fact as the gate measured the candidate on it."""

    question: str
    answer: str
    reply: str
    recalled: bool
    known: bool
    wordings: int
    wordings_recalled: int


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and its figures (``finetune.gate``'s metrics, as a page reads them)."""

    passed: bool
    compared_with: str | None
    reasons: tuple[str, ...]
    facts: tuple[FactView, ...] = ()
    probe_active: tuple[int, int] | None = None  # right, total on the general-knowledge probe
    probe_candidate: tuple[int, int] | None = None
    next_steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunView:
    """The newest retrain: where it stands, its steps, its losses, and once it ended its report."""

    name: str | None  # None while the process starts, before it made its folder
    status: str  # GOING_ON, or promoted, ab-test, refused, failed, dry-run, stopped, not-started
    profile: str | None
    started: str | None
    finished: str | None = None
    steps: tuple[StepView, ...] = ()
    losses: tuple[LossCurve, ...] = ()
    log_tail: tuple[str, ...] = ()  # the last progress lines, when the console started it
    report: str | None = None  # the run's summary (report.md's text)
    verdict: Verdict | None = None
    candidate: str | None = None  # the version it registered, if it got that far
    message: str | None = None  # why it failed, was stopped or was not started
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def going_on(self) -> bool:
        return self.status in GOING_ON


@runtime_checkable
class RetrainRuns(Protocol):
    """Starts ``iris retrain`` in its own process and reads the newest run from its files."""

    def profiles(self) -> list[str]:
        """The profiles a run may be started with."""
        ...

    def start_run(self, profile: str, ab_share: float | None, actor: str) -> None:
        """Start a run and return at once; ``RetrainRefused`` when one runs already (one at a time)."""
        ...

    def current_run(self) -> RunView | None:
        """The newest run (started here or elsewhere on this machine), None when there was none."""
        ...
