"""What a person controls about their data: a new conversation, consent, /forget (everything
stored about them, copies outside the database included), and the retention period that
deletes old conversations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from core.audit import AuditTrail, prune_details, retention_cutoff
from core.choices import AnotherAnswer
from core.config import ChatConfig
from core.domain import AuditAction, ChatRef, ErasedCopies, ForgetReport, Person, PruneReport
from core.ports import ConversationStore, CopyEraser

log = logging.getLogger(__name__)


class Privacy:
    """Resets, consent, /voice, /forget and retention; holds the copies outside the database."""

    def __init__(
        self,
        store: ConversationStore,
        trail: AuditTrail,
        config: ChatConfig,
        clock: Callable[[], float],
        again: AnotherAnswer,
        copies: CopyEraser | None = None,
    ) -> None:
        self.store = store
        self.trail = trail
        self.config = config
        self.clock = clock
        self.again = again  # the person's 🔁 pairs go with the rest of their data
        self.copies = copies
        self._sweeping = asyncio.Lock()  # one /forget sweep of the copies at a time
        self._forgetting: dict[str, asyncio.Task[ForgetReport]] = {}  # per person: the /forget under way
        self._forgot_at: dict[str, float] = {}  # per person: when their last /forget ran (without an audit log)

    async def reset(self, chat: ChatRef, person: Person, shared_history: bool = False) -> bool:
        """Start a new conversation; the old one stays stored but is no longer in the prompt."""
        return await asyncio.to_thread(self.store.reset, chat, person, shared_history)

    async def forget(self, person: Person, actor: str | None = None) -> ForgetReport:
        """Delete everything stored about a person: their turns, ratings and corrections,
        then their rows in every copy outside the database (exports, datasets, retrain runs).

        The report names the model versions already trained on their words. A
        request while one for the same person runs gets that one's report; one
        within ``ChatConfig.forget_cooldown_seconds`` of the last is refused
        (``ForgetReport.retry_after_s``); a person with nothing stored costs no sweep.
        ``actor``: an admin asking on the person's behalf (the console's ``web:<name>``);
        the trail then names the admin, and the person by pseudonym as the target.
        """
        running = self._forgetting.get(person.actor)
        if running is None:
            running = asyncio.ensure_future(self._forget_once(person, actor))
            self._forgetting[person.actor] = running
            running.add_done_callback(lambda _: self._forgetting.pop(person.actor, None))
        # Shielded: a person who gives up waiting does not stop a sweep halfway.
        return await asyncio.shield(running)

    async def _forget_once(self, person: Person, actor: str | None) -> ForgetReport:
        wait = await self._forget_cooldown(person)
        if wait > 0:
            return ForgetReport(0, 0, 0, 0, retry_after_s=wait)
        picked = await self.again.forget(person)  # their 🔁 pairs: rows of theirs in the DPO copies
        report = await asyncio.to_thread(self.store.forget, person)
        report = replace(report, turn_ids=(*report.turn_ids, *picked)) if picked else report
        who, target = (actor, person.pseudonym) if actor else (person.pseudonym, None)
        if not (report.turns or report.ratings or report.corrections or picked):
            # Nothing of theirs can be in a copy: a stranger's /forget must not cost a sweep.
            if report.known:
                await self.trail.record(who, AuditAction.FORGET, target, {"turns": 0})
            return report
        self._forgot_at[person.actor] = time.time()
        if self.copies is not None:
            copies = await self._erase_copies(person, turn_ids=report.turn_ids)
            report = replace(report, copies=copies)
        await self.trail.record(who, AuditAction.FORGET, target, _forget_details(report))
        return report

    async def _forget_cooldown(self, person: Person) -> float:
        """Seconds until the person may use /forget again: from the audit trail (every process), else memory."""
        cooldown = self.config.forget_cooldown_seconds
        now = time.time()  # wall time, as the audit trail keeps it
        last = self._forgot_at.get(person.actor, float("-inf"))
        if cooldown > 0 and self.trail.store is not None:
            since = datetime.fromtimestamp(now - cooldown, UTC)
            try:
                entries = await self.trail.entries(since)
            except Exception:
                log.exception("could not read the audit trail for the /forget cooldown")
                entries = []
            swept = [
                e.at.timestamp()
                for e in entries
                if e.action is AuditAction.FORGET
                and person.pseudonym in (e.actor, e.target)
                and e.details.get("turns")
            ]
            last = max([last, *swept])
        return max(0.0, last + cooldown - now)

    async def _erase_copies(
        self, person: Person | None, turn_ids: Sequence[int] = (), conversation_ids: Sequence[int] = ()
    ) -> ErasedCopies:
        """Take rows out of the copies outside the database, one sweep at a time; a failure is reported."""
        assert self.copies is not None
        async with self._sweeping:
            try:
                return await asyncio.to_thread(self.copies.erase, person, turn_ids, conversation_ids)
            except Exception:
                log.exception("could not remove rows from the copies outside the database")
                return ErasedCopies(unreachable=("the training data folders",))

    async def set_consent(self, person: Person, consent: bool | None, actor: str | None = None) -> None:
        """Record whether the person's conversations may be used to train future versions
        (None: the deployment's setting decides); ``actor``: an admin recording it for them."""
        await asyncio.to_thread(self.store.set_consent, person, consent)
        await self.trail.record(actor or person.actor, AuditAction.CONSENT, person.actor, {"consent": consent})

    async def prune(self, dry_run: bool = False, actor: str = "retention") -> PruneReport | None:
        """Apply the retention period (``ChatConfig.retention_days``) now; None when there is none."""
        days = self.config.retention_days
        if days <= 0:
            return None
        cutoff = retention_cutoff(self.clock(), days)
        report = await asyncio.to_thread(self.store.prune, cutoff, dry_run)
        if dry_run:
            return report
        if self.copies is not None and report.conversation_ids:
            copies = await self._erase_copies(None, conversation_ids=report.conversation_ids)
            report = replace(report, copies=copies)
        await self.trail.record(actor, AuditAction.PRUNE, None, prune_details(report, days))
        return report

    async def keep_pruning(self, interval_s: float = 24 * 3600) -> None:
        """Apply retention now and then every ``interval_s`` until cancelled (the running bots' daily prune)."""
        while True:
            try:
                report = await self.prune()
                if report is not None:
                    log.info(
                        "retention: deleted %s conversations (%s turns), kept %s for training, %s people",
                        report.conversations,
                        report.turns,
                        report.kept_for_training,
                        report.people,
                    )
            except Exception:
                log.exception("retention could not be applied; trying again in %s s", interval_s)
            await asyncio.sleep(interval_s)


def _forget_details(report: ForgetReport) -> dict[str, object]:
    """The audit entry of a /forget: what was deleted, and from which files outside the database."""
    details: dict[str, object] = {
        "turns": report.turns,
        "ratings": report.ratings,
        "corrections": report.corrections,
    }
    if report.copies is not None:
        details |= {
            "files": report.copies.files,
            "rows": report.copies.rows,
            "removed": dict(report.copies.removed),
            "models": list(report.copies.models),
            "unreachable": list(report.copies.unreachable),
            "unchecked": list(report.copies.unchecked),
        }
    return details
