"""Serving an A/B test: which model (or persona) writes a reply, and the rule's decision once it is due.

While an experiment of model versions runs, a conversation on the candidate arm is
answered by a generator pinned to the candidate version, loaded next to the active
one; the control arm is answered by the usual generator, which follows the registry
(so a hot swap or a rollback during the experiment changes the control arm, and
every reply records the version that wrote it). While an experiment of personas
runs, both arms are answered by the usual generator, each with its arm's persona
(prompt and temperature), except in chats whose persona someone chose: they keep it
and stay out of the test. The running experiment is read from the database before
every reply, as the active version is, so every process sees a start, a stop or a
promotion before its next reply.

All methods here block (database, model loading): the service calls them from
worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.domain import AuditAction, ModelVersion
from core.experiments import (
    ABReport,
    Arm,
    Decision,
    Experiment,
    ExperimentKind,
    arm_for,
    report,
    sample_complete,
)
from core.personas import Persona, PersonaBook
from core.ports import AuditLog, Experiments, ModelRegistry, ReplyGenerator

log = logging.getLogger(__name__)


class PinnedGenerator(ReplyGenerator, Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class Choice:
    """The generator for one reply, and the experiment and arm to record with it."""

    generator: ReplyGenerator
    experiment: tuple[int, Arm] | None = None
    persona: Persona | None = None  # a persona experiment's arm writes it; None: the chat's persona


class ABServing:
    """Picks the generator of each reply while an experiment runs; keeps the candidate loaded."""

    def __init__(
        self,
        experiments: Experiments,
        registry: ModelRegistry,
        pinned: Callable[[ModelVersion], PinnedGenerator],
    ) -> None:
        self.experiments = experiments
        self.registry = registry
        self.pinned = pinned  # a generator that always serves one version
        self._candidate: tuple[str, PinnedGenerator] | None = None
        self._lock = threading.Lock()

    def choose(
        self, conversation_id: int, active: ReplyGenerator, personas: PersonaBook | None = None
    ) -> Choice:
        """The generator (and, in a persona experiment, the persona) that answers this conversation now."""
        experiment = self.experiments.running_experiment()
        if experiment is None or experiment.kind is ExperimentKind.PERSONA:
            self._retire_candidate()
        if experiment is None:
            return Choice(active)
        arm = arm_for(experiment, conversation_id)
        if experiment.kind is ExperimentKind.PERSONA:
            name = experiment.arm_name(arm)
            persona = personas.for_arm(conversation_id, name) if personas is not None and name else None
            if persona is None:  # its chat's persona was chosen, or the arm's was removed: not in the test
                return Choice(active)
            return Choice(active, (experiment.id, arm), persona)
        if arm is Arm.CONTROL:
            return Choice(active, (experiment.id, arm))
        return Choice(self._candidate_generator(experiment.candidate), (experiment.id, arm))

    def _candidate_generator(self, name: str) -> ReplyGenerator:
        with self._lock:
            if self._candidate is not None and self._candidate[0] == name:
                return self._candidate[1]
            version = next((v for v in self.registry.list_models() if v.name == name), None)
            if version is None:
                raise LookupError(f"the experiment's candidate {name!r} is not registered")
            generator = self.pinned(version)  # loads on its first reply, in that reply's thread
            stale, self._candidate = self._candidate, (name, generator)
        if stale is not None:
            _close_later(stale[1])
        return generator

    def _retire_candidate(self) -> None:
        with self._lock:
            stale, self._candidate = self._candidate, None
        if stale is not None:
            log.info("the experiment ended: unloading its candidate %s", stale[0])
            _close_later(stale[1])

    def close(self) -> None:
        with self._lock:
            stale, self._candidate = self._candidate, None
        if stale is not None:
            stale[1].close()


def latest_report(experiments: Experiments, seed: int = 0) -> ABReport | None:
    """The figures of the running experiment, or else of the one that ended last."""
    experiment = experiments.latest_experiment()
    return experiment_report(experiments, experiment, seed) if experiment else None


def experiment_report(experiments: Experiments, experiment: Experiment, seed: int = 0) -> ABReport:
    counts = experiments.arm_counts(experiment.id)
    return report(experiment, counts, experiments.arm_ratings(experiment.id), seed=seed)


def decide_if_due(
    experiments: Experiments, registry: ModelRegistry, audit: AuditLog | None
) -> Experiment | None:
    """After a rating: end the running experiment once both arms have their ratings and raters.

    The number of ratings is fixed when it starts; before both arms reach it,
    from enough distinct people, nothing is decided, however the figures look
    (no stopping on a lucky streak, and no one person deciding it).
    """
    experiment = experiments.running_experiment()
    if experiment is None:
        return None
    ratings = experiments.arm_ratings(experiment.id)
    # Counted here first: the figures (statsmodels, a bootstrap) are only worked out once they are due.
    if not sample_complete(experiment, ratings):
        return None
    figures = report(experiment, experiments.arm_counts(experiment.id), ratings)
    return conclude(experiments, registry, audit, experiment, figures.decision, "ab-rule", figures)


def conclude(
    experiments: Experiments,
    registry: ModelRegistry,
    audit: AuditLog | None,
    experiment: Experiment,
    decision: Decision,
    actor: str,
    figures: ABReport | None = None,
) -> Experiment | None:
    """End ``experiment``: promote activates the candidate, rollback keeps the active version.

    A persona experiment makes its winner the default persona instead (the candidate on
    promote, the control on rollback; the store does it in the transaction that ends it).
    None when it had ended already (another process or command decided first).
    Serving processes unload the candidate before their next reply.
    """
    if decision is Decision.WAIT:
        raise ValueError("an experiment ends with promote or rollback")
    figures = figures or experiment_report(experiments, experiment)
    ended = experiments.end_experiment(experiment.id, decision, actor, figures.to_json())
    if ended is None:
        return None
    by_persona = experiment.kind is ExperimentKind.PERSONA
    if decision is Decision.PROMOTE and not by_persona:
        registry.activate_model(experiment.candidate)
    if audit is not None:
        details: dict[str, object] = {"experiment": experiment.id, "decision": decision.value}
        if by_persona:
            details["kind"] = experiment.kind.value
        if figures.comparison is not None:
            details["difference"] = round(figures.comparison.difference, 4)
        try:
            audit.record_audit(actor, AuditAction.AB_STOP, experiment.candidate, details)
            if decision is Decision.PROMOTE and not by_persona:
                audit.record_audit(actor, AuditAction.PROMOTE, experiment.candidate, {"by": "ab"})
            default = ended.report.get("default_persona")
            if by_persona and isinstance(default, str):
                made = {"default": True, "by": "ab", "experiment": experiment.id}
                audit.record_audit(actor, AuditAction.PERSONA_EDIT, default, made)
        except Exception:
            log.exception("could not write the end of experiment %s to the audit trail", experiment.id)
    log.warning("experiment %s ended: %s %s", experiment.id, decision.value, experiment.candidate)
    return ended


def _close_later(generator: PinnedGenerator) -> None:
    # Closing waits for the replies it is writing: not on the caller's thread.
    threading.Thread(target=generator.close, name="ab-retire", daemon=True).start()


def start(
    experiments: Experiments,
    audit: AuditLog | None,
    candidate: str,
    *,
    share: float,
    min_ratings: int,
    margin: float,
    actor: str,
    control_persona: str | None = None,
) -> Experiment:
    """Start an A/B test of ``candidate`` against the active version; raise ValueError when it cannot.

    With ``control_persona``, an A/B test of persona ``candidate`` against persona ``control_persona``
    on the active version.
    """
    if control_persona is not None:
        experiment = experiments.start_persona_experiment(
            control_persona, candidate, share, min_ratings, margin, actor
        )
    else:
        experiment = experiments.start_experiment(candidate, share, min_ratings, margin, actor)
    if audit is not None:
        details: dict[str, object] = {
            "experiment": experiment.id,
            "share": share,
            "min_ratings": min_ratings,
            "margin": margin,
            "control": experiment.control,
        }
        if control_persona is not None:
            details["kind"] = experiment.kind.value
        audit.record_audit(actor, AuditAction.AB_START, candidate, details)
    return experiment
