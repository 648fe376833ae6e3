"""A/B tests of model versions in the database: ``core.ports.Experiments`` on SQLAlchemy.

The per-person cap on the ratings an arm counts is applied in the query, so every
process (and ``iris models ab status``) counts the same ratings.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from core.domain import Role
from core.experiments import ABConfig, Arm, ArmCounts, ArmRating, Decision, Experiment
from storage.database import session_factory
from storage.mapping import aware
from storage.tables import ExperimentRow, ModelVersionRow, RatingRow, TurnRow, utcnow


class ExperimentRefused(ValueError):
    """An experiment that cannot start; ``str(error)`` says why, for the admin."""


def to_experiment(row: ExperimentRow, rules: ABConfig) -> Experiment:
    return Experiment(
        id=row.id,
        candidate=row.candidate,
        control=row.control,
        share=row.share,
        min_ratings=row.min_ratings,
        margin=row.margin,
        started_at=aware(row.started_at),
        started_by=row.started_by,
        ended_at=aware(row.ended_at) if row.ended_at else None,
        decision=Decision(row.decision) if row.decision else None,
        decided_by=row.decided_by,
        report=dict(row.report or {}),
        ratings_per_person=rules.ratings_per_person,
        min_raters=rules.min_raters,
    )


class SqlExperiments:
    """Implements ``core.ports.Experiments``: one experiment runs at a time, in every process.

    ``rules`` (the deployment's ``IRIS_AB_*``) say how ratings are counted: at most
    ``ratings_per_person`` of one person's on an arm, and ``min_raters`` people an arm before
    the rule decides. They are read from the settings, not stored with the experiment, so
    every process sharing the database must be given the same ones.
    """

    def __init__(self, engine: Engine, rules: ABConfig | None = None) -> None:
        self.engine = engine
        self.rules = rules or ABConfig()
        self._sessions = session_factory(engine)

    def running_experiment(self) -> Experiment | None:
        with self._sessions.begin() as session:
            row = session.scalars(select(ExperimentRow).where(ExperimentRow.running.is_(True))).first()
            return to_experiment(row, self.rules) if row else None

    def latest_experiment(self) -> Experiment | None:
        """The running experiment, or else the one that ended last."""
        with self._sessions.begin() as session:
            row = session.scalars(select(ExperimentRow).order_by(ExperimentRow.id.desc()).limit(1)).first()
            return to_experiment(row, self.rules) if row else None

    def start_experiment(
        self, candidate: str, share: float, min_ratings: int, margin: float, started_by: str
    ) -> Experiment:
        if not 0 < share < 1:
            raise ExperimentRefused(f"the candidate's share must be between 0 and 1, not {share}")
        if min_ratings < 1:
            raise ExperimentRefused("the experiment needs at least one rating per arm")
        with self._sessions.begin() as session:
            version = session.scalars(select(ModelVersionRow).where(ModelVersionRow.name == candidate)).first()
            if version is None:
                raise ExperimentRefused(f"no model version named {candidate!r}; add it with `iris models add`")
            if version.active:
                raise ExperimentRefused(f"{candidate} is the active version already")
            control = session.scalars(select(ModelVersionRow.name).where(ModelVersionRow.active)).first()
            running = session.scalars(select(ExperimentRow).where(ExperimentRow.running.is_(True))).first()
            if running is not None:
                raise ExperimentRefused(
                    f"experiment {running.id} ({running.candidate}) is running; stop it first"
                )
            row = ExperimentRow(
                candidate=candidate,
                control=control,
                share=share,
                min_ratings=min_ratings,
                margin=margin,
                started_by=started_by,
                running=True,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # another process started one meanwhile
                raise ExperimentRefused("another experiment started meanwhile") from None
            return to_experiment(row, self.rules)

    def end_experiment(
        self, experiment_id: int, decision: Decision, decided_by: str, report: dict[str, Any]
    ) -> Experiment | None:
        """End a running experiment; None when it had ended already (another process decided first)."""
        with self._sessions.begin() as session:
            ended = session.execute(
                update(ExperimentRow)
                .where(ExperimentRow.id == experiment_id, ExperimentRow.running.is_(True))
                .values(
                    running=None,
                    ended_at=utcnow(),
                    decision=decision.value,
                    decided_by=decided_by,
                    report=report,
                )
                .returning(ExperimentRow.id)
            ).first()
            if ended is None:
                return None
            return to_experiment(session.get_one(ExperimentRow, experiment_id), self.rules)

    def arm_counts(self, experiment_id: int) -> dict[Arm, ArmCounts]:
        reply = (TurnRow.experiment_id == experiment_id) & (TurnRow.role == Role.ASSISTANT.value)
        with self._sessions.begin() as session:
            served = session.execute(
                select(TurnRow.arm, func.count(func.distinct(TurnRow.conversation_id)), func.count(TurnRow.id))
                .where(reply)
                .group_by(TurnRow.arm)
            ).all()
            rated = {
                arm: (replies, ratings)
                for arm, replies, ratings in session.execute(
                    select(TurnRow.arm, func.count(func.distinct(TurnRow.id)), func.count(RatingRow.id))
                    .join(RatingRow, RatingRow.turn_id == TurnRow.id)
                    .where(reply)
                    .group_by(TurnRow.arm)
                )
            }
            versions: dict[Arm, list[str]] = {}
            for arm, version in session.execute(
                select(TurnRow.arm, TurnRow.model_version)
                .where(reply)
                .distinct()
                .order_by(TurnRow.model_version)
            ):
                versions.setdefault(_arm(arm), []).append(version or "?")
        return {
            _arm(arm): ArmCounts(
                conversations,
                replies,
                rated.get(arm, (0, 0))[0],
                tuple(versions.get(_arm(arm), ())),
                rated.get(arm, (0, 0))[1],
            )
            for arm, conversations, replies in served
        }

    def arm_ratings(self, experiment_id: int) -> list[ArmRating]:
        """The ratings the rule counts: each person's first ``ratings_per_person`` on each arm.

        First by when the rating was made (its row id), so a later press never
        changes which of a person's ratings count; changing a rating keeps its place.
        """
        nth = (
            func.row_number()
            .over(partition_by=(RatingRow.person_id, TurnRow.arm), order_by=RatingRow.id)
            .label("nth")
        )
        ranked = (
            select(
                TurnRow.conversation_id, TurnRow.arm, RatingRow.value, RatingRow.person_id, RatingRow.id, nth
            )
            .join(RatingRow, RatingRow.turn_id == TurnRow.id)
            .where(TurnRow.experiment_id == experiment_id)
            .subquery()
        )
        with self._sessions.begin() as session:
            rows = session.execute(
                select(ranked.c.conversation_id, ranked.c.arm, ranked.c.value, ranked.c.person_id)
                .where(ranked.c.nth <= self.rules.ratings_per_person)
                .order_by(ranked.c.id)
            ).all()
        return [
            ArmRating(conversation, _arm(arm), value > 0, person) for conversation, arm, value, person in rows
        ]


def _arm(value: str | None) -> Arm:
    """A reply's arm; one written in an experiment always has one (a NULL here is an error)."""
    return Arm(value or "")
