"""What admins run and read: statistics, the A/B test's figures, retrains, the audit trail.

Adapters check that the caller is an admin before they call any of these.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from core.ab import ABServing, latest_report
from core.audit import AuditTrail, retrain_entries
from core.domain import AuditAction, AuditEntry, Stats
from core.experiments import ABReport
from core.i18n import _
from core.ports import ConversationStore, Retrainer, RetrainOutcome


class RetrainBusy(RuntimeError):
    """A retrain is already running; one at a time."""


class Administration:
    """Statistics, A/B figures, retrains and the audit trail; holds the retrainer."""

    def __init__(
        self,
        store: ConversationStore,
        trail: AuditTrail,
        retrainer: Retrainer | None = None,
        ab: ABServing | None = None,
    ) -> None:
        self.store = store
        self.trail = trail
        self.retrainer = retrainer
        self.ab = ab
        self._retraining = asyncio.Lock()

    async def stats(self) -> Stats:
        return await asyncio.to_thread(self.store.stats)

    async def ab_status(self) -> ABReport | None:
        """The running A/B test's figures, or else the last one's; None when there never was one."""
        if self.ab is None:
            return None
        return await asyncio.to_thread(latest_report, self.ab.experiments)

    async def retrain(self, profile: str | None = None, actor: str = "unknown") -> RetrainOutcome:
        """Run a retrain in its own process; the bots keep answering meanwhile.

        A promoted model is picked up by the generator between replies. The
        trail records who started it, how it ended and what it promoted.
        """
        if self.retrainer is None:
            # Said in the chat's language (a chat adapter set it); nothing is recorded.
            return RetrainOutcome(False, False, None, _("Retraining is not set up on this deployment."))
        if self._retraining.locked():
            raise RetrainBusy("a retrain is already running")
        async with self._retraining:
            await self.trail.record(actor, AuditAction.RETRAIN_START, profile, {"profile": profile})
            try:
                outcome = await asyncio.to_thread(self.retrainer.retrain, profile)
            except Exception as error:
                await self.trail.record(
                    actor, AuditAction.RETRAIN_OUTCOME, profile, {"ok": False, "error": type(error).__name__}
                )
                raise
            for action, target, details in retrain_entries(outcome):
                await self.trail.record(actor, action, target, details)
            return outcome

    async def audit_trail(self, since: datetime | None = None) -> list[AuditEntry]:
        """The audit trail, oldest first (admins only: adapters check before they call)."""
        return await self.trail.entries(since)
