"""The audit trail's lines: what each admin action records (counts and ids, never people's words)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from core.domain import AuditAction, AuditEntry, Correction, CorrectionStatus, PruneReport
from core.ports import AuditLog, RetrainOutcome

log = logging.getLogger(__name__)


class AuditTrail:
    """The service's side of the audit trail: written off the event loop, never failing an action.

    ``store`` None: nothing is recorded (a deployment or a test without one).
    """

    def __init__(self, store: AuditLog | None) -> None:
        self.store = store

    async def record(
        self, actor: str, action: AuditAction, target: str | None, details: dict[str, object]
    ) -> None:
        """Write one line; an unwritable trail is logged, and the action it records stands."""
        if self.store is None:
            return
        try:
            await asyncio.to_thread(self.store.record_audit, actor, action, target, details)
        except Exception:
            log.exception("could not write %s by %s to the audit trail", action.value, actor)

    async def entries(self, since: datetime | None = None) -> list[AuditEntry]:
        """The trail, oldest first, from ``since``."""
        if self.store is None:
            return []
        return await asyncio.to_thread(self.store.audit_entries, since)


def retention_cutoff(now: float, days: float) -> datetime:
    """The moment before which a conversation's last turn makes it old."""
    return datetime.fromtimestamp(now, UTC) - timedelta(days=days)


def prune_details(report: PruneReport, days: float) -> dict[str, object]:
    """The audit line's details of a prune (counts only: no words, no people)."""
    return {
        "days": days,
        "cutoff": report.cutoff.isoformat(timespec="seconds"),
        "conversations": report.conversations,
        "turns": report.turns,
        "ratings": report.ratings,
        "corrections": report.corrections,
        "people": report.people,
        "kept_for_training": report.kept_for_training,
        "files": report.copies.files if report.copies else 0,
    }


def review_entry(decided: Correction, *, edited: bool) -> tuple[AuditAction, str, dict[str, object]]:
    """The audit line of a review decision (the chat's and ``iris review``'s)."""
    if decided.status is CorrectionStatus.REJECTED:
        action = AuditAction.REVIEW_REJECT
    else:
        action = AuditAction.REVIEW_EDIT if edited else AuditAction.REVIEW_APPROVE
    return action, f"correction:{decided.id}", {"status": decided.status.value, "turn": decided.turn_id}


def memory_entry(decided: Correction, change: int) -> tuple[AuditAction, str, dict[str, object]] | None:
    """The audit line of the correction memory following a review (``CorrectionMemory.learn``'s
    ``change``: wordings indexed, or minus the entries dropped); None when it did not change."""
    if change > 0:
        return AuditAction.MEMORY_ADD, f"correction:{decided.id}", {"wordings": change}
    if change < 0:
        return AuditAction.MEMORY_DROP, f"correction:{decided.id}", {"entries": -change}
    return None


def retrain_entries(outcome: RetrainOutcome) -> list[tuple[AuditAction, str | None, dict[str, object]]]:
    """The audit lines of a finished retrain: its outcome, and the promotion if there was one."""
    entries: list[tuple[AuditAction, str | None, dict[str, object]]] = [
        (
            AuditAction.RETRAIN_OUTCOME,
            outcome.model,
            {
                "ok": outcome.ok,
                "promoted": outcome.promoted,
                "model": outcome.model,
                "summary": outcome.summary,
            },
        )
    ]
    if outcome.promoted and outcome.model:
        entries.append((AuditAction.PROMOTE, outcome.model, {"by": "retrain"}))
    return entries
