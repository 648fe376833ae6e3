"""The review queue's pages (``core.review_queue``): keyset paging, one query per page."""

from __future__ import annotations

from sqlalchemy import Engine, ScalarSelect, func, select
from sqlalchemy.orm import aliased

from core.domain import CorrectionStatus
from core.review_queue import ReviewItem, ReviewPage
from storage.database import session_factory
from storage.mapping import to_correction
from storage.tables import CorrectionRow, PersonRow, RatingRow, TurnRow


class SqlReviewQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    def page(
        self, status: CorrectionStatus | None, model: str | None, after: int | None, limit: int
    ) -> ReviewPage:
        reply, question = aliased(TurnRow), aliased(TurnRow)

        def votes(sign: int) -> ScalarSelect[int]:
            return (
                select(func.count())
                .where(RatingRow.turn_id == reply.id, RatingRow.value == sign)
                .correlate(reply)
                .scalar_subquery()
            )

        served = (
            select(func.count())
            .where(TurnRow.memory_correction_id == CorrectionRow.id)
            .correlate(CorrectionRow)
            .scalar_subquery()
        )
        where = [] if model is None else [reply.model_version == model]
        query = (
            select(
                CorrectionRow,
                PersonRow,
                question.text,
                reply.text,
                served,
                reply.model_version,
                votes(1),
                votes(-1),
            )
            .join(PersonRow, PersonRow.id == CorrectionRow.person_id)
            .join(reply, reply.id == CorrectionRow.turn_id)
            .outerjoin(question, question.id == reply.reply_to_id)
            .where(*where)
            .order_by(CorrectionRow.id)
            .limit(limit + 1)  # one more: whether there is a next page
        )
        if status is not None:
            query = query.where(CorrectionRow.status == status.value)
        if after is not None:
            query = query.where(CorrectionRow.id > after)
        counted = (
            select(CorrectionRow.status, func.count())
            .join(reply, reply.id == CorrectionRow.turn_id)
            .where(*where)
            .group_by(CorrectionRow.status)
        )
        with self._sessions() as session:
            rows = session.execute(query).all()
            counts = {CorrectionStatus(name): n for name, n in session.execute(counted).all()}
        items = [
            ReviewItem(to_correction(row, person, asked, said, n), version, up or 0, down or 0)
            for row, person, asked, said, n, version, up, down in rows[:limit]
        ]
        next_after = items[-1].correction.id if len(rows) > limit and items else None
        return ReviewPage(items, next_after, counts)

    def model_versions(self) -> list[str]:
        query = (
            select(TurnRow.model_version)
            .join(CorrectionRow, CorrectionRow.turn_id == TurnRow.id)
            .where(TurnRow.model_version.is_not(None))
            .distinct()
        )
        with self._sessions() as session:
            return sorted(v for v in session.scalars(query).all() if v)
