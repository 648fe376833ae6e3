"""The correction memory's entries in the database (``core.memory.MemoryStore``).

Beside the corrections, so that every process serves the same memory and a
correction removed in one (rejected, edited, /forget) is gone for all of them
at their next lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Engine, delete, func, select

from core.domain import Correction, CorrectionStatus
from core.memory import MemoryEntry
from storage.database import session_factory
from storage.repository import SqlStore
from storage.tables import CorrectionMemoryRow, CorrectionRow


class SqlMemoryStore:
    """``core.memory.MemoryStore`` on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    def memory_stamp(self, model: str) -> tuple[int, int]:
        query = select(func.max(CorrectionMemoryRow.id), func.count()).where(CorrectionMemoryRow.model == model)
        with self._sessions() as session:
            highest, count = session.execute(query).one()
        return int(highest or 0), int(count)

    def memory_entries(self, model: str) -> list[MemoryEntry]:
        query = (
            select(CorrectionMemoryRow)
            .join(CorrectionRow, CorrectionRow.id == CorrectionMemoryRow.correction_id)
            .where(CorrectionMemoryRow.model == model, CorrectionRow.status == CorrectionStatus.APPROVED.value)
            .order_by(CorrectionMemoryRow.id)
        )
        with self._sessions() as session:
            return [
                MemoryEntry(
                    row.correction_id,
                    row.question,
                    row.wording,
                    row.answer,
                    row.vector,
                    row.negative,
                    row.is_answer,
                )
                for row in session.scalars(query)
            ]

    def replace_memory(
        self,
        correction_id: int,
        model: str,
        question: str,
        answer: str,
        rows: Sequence[tuple[str, bytes]],
        negatives: Sequence[tuple[str, bytes]] = (),
        answer_vector: bytes | None = None,
    ) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(CorrectionMemoryRow).where(_of(correction_id)))
            # Indexed only while it is approved: a rejection racing this write leaves nothing behind.
            status = session.scalar(select(CorrectionRow.status).where(CorrectionRow.id == correction_id))
            if status != CorrectionStatus.APPROVED.value:
                return
            session.add_all(
                CorrectionMemoryRow(
                    correction_id=correction_id,
                    model=model,
                    question=question,
                    wording=wording,
                    answer=answer,
                    vector=vector,
                    negative=negative,
                    is_answer=is_answer,
                )
                for negative, is_answer, pairs in (
                    (False, False, rows),
                    (True, False, negatives),
                    (False, True, [(answer, answer_vector)] if answer_vector is not None else []),
                )
                for wording, vector in pairs
            )

    def drop_memory(self, correction_id: int) -> int:
        with self._sessions.begin() as session:
            dropped = session.execute(delete(CorrectionMemoryRow).where(_of(correction_id)))
            return int(dropped.rowcount)  # type: ignore[attr-defined]

    def add_negative(self, correction_id: int, model: str, wording: str, vector: bytes) -> None:
        with self._sessions.begin() as session:
            indexed = session.scalars(
                select(CorrectionMemoryRow)
                .where(_of(correction_id), CorrectionMemoryRow.model == model)
                .limit(1)
            ).first()
            if indexed is None:  # removed meanwhile: nothing to dispute
                return
            session.add(
                CorrectionMemoryRow(
                    correction_id=correction_id,
                    model=model,
                    question=indexed.question,
                    wording=wording,
                    answer=indexed.answer,
                    vector=vector,
                    negative=True,
                )
            )

    def unindexed_corrections(self, model: str) -> list[Correction]:
        indexed = select(CorrectionMemoryRow.correction_id).where(CorrectionMemoryRow.model == model)
        approved = SqlStore(self.engine).corrections(CorrectionStatus.APPROVED)
        with self._sessions() as session:
            done = set(session.scalars(indexed))
        return [c for c in approved if c.id not in done]


def _of(correction_id: int) -> ColumnElement[bool]:
    return CorrectionMemoryRow.correction_id == correction_id
