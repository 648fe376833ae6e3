"""The audit trail's lines: what each admin action records (counts and ids, never people's words)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.domain import AuditAction, Correction, CorrectionStatus, PruneReport
from core.ports import RetrainOutcome


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
