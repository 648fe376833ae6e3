"""A/B tests of model versions or personas in the database: ``core.ports.Experiments`` on SQLAlchemy.

The per-person cap on the ratings an arm counts is applied in the query, so every
process (and ``iris models ab status``) counts the same ratings. A reply the correction
memory served word for word was written by neither arm: it and its ratings are left out of
every count here (``ArmCounts.memory_served`` says how many there were).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.domain import Role
from core.experiments import ABConfig, Arm, ArmCounts, ArmRating, Decision, Experiment, ExperimentKind
from core.memory import MemoryMode
from storage.database import session_factory
from storage.locks import serialize
from storage.mapping import aware
from storage.tables import ExperimentRow, ModelVersionRow, PersonaRow, RatingRow, TurnRow, utcnow

# A reply some arm wrote: not one the correction memory served word for word (``core.memory``).
WRITTEN_BY_ARM = or_(TurnRow.memory_mode.is_(None), TurnRow.memory_mode != MemoryMode.SERVED.value)


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
        kind=ExperimentKind(row.kind or ExperimentKind.MODEL.value),
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
        _check_rules(share, min_ratings)
        with self._sessions.begin() as session:
            version = session.scalars(select(ModelVersionRow).where(ModelVersionRow.name == candidate)).first()
            if version is None:
                raise ExperimentRefused(f"no model version named {candidate!r}; add it with `iris models add`")
            if version.active:
                raise ExperimentRefused(f"{candidate} is the active version already")
            control = session.scalars(select(ModelVersionRow.name).where(ModelVersionRow.active)).first()
            return self._insert(
                session, ExperimentKind.MODEL, control, candidate, share, min_ratings, margin, started_by
            )

    def start_persona_experiment(
        self, control: str, candidate: str, share: float, min_ratings: int, margin: float, started_by: str
    ) -> Experiment:
        """Answer ``share`` of conversations with persona ``candidate``, the rest with ``control``."""
        _check_rules(share, min_ratings)
        if control == candidate:
            raise ExperimentRefused("an A/B test of personas needs two different personas")
        with self._sessions.begin() as session:
            for name in (control, candidate):
                if session.scalar(select(PersonaRow.id).where(PersonaRow.name == name)) is None:
                    raise ExperimentRefused(f"no persona named {name!r}; add it with `iris persona add`")
            return self._insert(
                session, ExperimentKind.PERSONA, control, candidate, share, min_ratings, margin, started_by
            )

    def _insert(
        self,
        session: Session,
        kind: ExperimentKind,
        control: str | None,
        candidate: str,
        share: float,
        min_ratings: int,
        margin: float,
        started_by: str,
    ) -> Experiment:
        """Store a running experiment, unless one runs (of either kind: one at a time)."""
        running = session.scalars(select(ExperimentRow).where(ExperimentRow.running.is_(True))).first()
        if running is not None:
            what = "personas " if running.kind == ExperimentKind.PERSONA.value else ""
            raise ExperimentRefused(
                f"experiment {running.id} ({what}{running.candidate}) is running; stop it first"
            )
        row = ExperimentRow(
            kind=kind.value,
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
        """End a running experiment; None when it had ended already (another process decided first).

        A persona experiment's winner (the candidate on promote, the control on rollback) becomes
        the default persona in the same transaction, so exactly one ending sets it;
        ``report["default_persona"]`` names it, or is None when that persona was removed meanwhile.
        """
        with self._sessions.begin() as session:
            kind = session.scalar(select(ExperimentRow.kind).where(ExperimentRow.id == experiment_id))
            if kind == ExperimentKind.PERSONA.value:
                serialize(session, PersonaRow)  # first: an admin's default change waits, or we wait for it
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
            row = session.get_one(ExperimentRow, experiment_id)
            if kind == ExperimentKind.PERSONA.value:
                winner = row.candidate if decision is Decision.PROMOTE else row.control
                made = _make_default_persona(session, winner or "", decided_by)
                row.report = {**report, "default_persona": winner if made else None}
                session.flush()
            return to_experiment(row, self.rules)

    def arm_counts(self, experiment_id: int) -> dict[Arm, ArmCounts]:
        """Per arm, what it wrote (replies the memory served are counted apart, in ``memory_served``)."""
        reply = (TurnRow.experiment_id == experiment_id) & (TurnRow.role == Role.ASSISTANT.value)
        written = reply & WRITTEN_BY_ARM
        with self._sessions.begin() as session:
            kind = session.scalar(select(ExperimentRow.kind).where(ExperimentRow.id == experiment_id))
            wrote = {
                arm: (conversations, replies)
                for arm, conversations, replies in session.execute(
                    select(
                        TurnRow.arm, func.count(func.distinct(TurnRow.conversation_id)), func.count(TurnRow.id)
                    )
                    .where(written)
                    .group_by(TurnRow.arm)
                )
            }
            rated = {
                arm: (replies, ratings)
                for arm, replies, ratings in session.execute(
                    select(TurnRow.arm, func.count(func.distinct(TurnRow.id)), func.count(RatingRow.id))
                    .join(RatingRow, RatingRow.turn_id == TurnRow.id)
                    .where(written)
                    .group_by(TurnRow.arm)
                )
            }
            from_memory = dict(
                session.execute(
                    select(TurnRow.arm, func.count(TurnRow.id))
                    .where(reply & ~WRITTEN_BY_ARM)
                    .group_by(TurnRow.arm)
                ).all()
            )
            by_persona = kind == ExperimentKind.PERSONA.value
            versions: dict[Arm, list[str]] = {}
            for arm, version, persona, persona_version in session.execute(
                select(TurnRow.arm, TurnRow.model_version, TurnRow.persona, TurnRow.persona_version)
                .where(written)
                .distinct()
            ):
                name = f"{persona or '?'} v{persona_version or 0}" if by_persona else version or "?"
                if name not in versions.setdefault(_arm(arm), []):
                    versions[_arm(arm)].append(name)
        return {
            _arm(arm): ArmCounts(
                wrote.get(arm, (0, 0))[0],
                wrote.get(arm, (0, 0))[1],
                rated.get(arm, (0, 0))[0],
                tuple(sorted(versions.get(_arm(arm), ()))),
                rated.get(arm, (0, 0))[1],
                from_memory.get(arm, 0),
            )
            for arm in wrote.keys() | from_memory.keys()
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
            .where(TurnRow.experiment_id == experiment_id, WRITTEN_BY_ARM)
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


def _check_rules(share: float, min_ratings: int) -> None:
    if not 0 < share < 1:
        raise ExperimentRefused(f"the candidate's share must be between 0 and 1, not {share}")
    if min_ratings < 1:
        raise ExperimentRefused("the experiment needs at least one rating per arm")


def _make_default_persona(session: Session, name: str, by: str) -> bool:
    """Make persona ``name`` the one default (the previous default cleared first); False when it is gone."""
    row = session.scalars(select(PersonaRow).where(PersonaRow.name == name)).first()
    if row is None:
        return False
    if not row.is_default:
        session.execute(update(PersonaRow).where(PersonaRow.is_default.is_(True)).values(is_default=None))
        session.flush()
        row.is_default, row.updated_by, row.updated_at = True, by, utcnow()
    return True


def _arm(value: str | None) -> Arm:
    """A reply's arm; one written in an experiment always has one (a NULL here is an error)."""
    return Arm(value or "")
