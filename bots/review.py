"""Reviewing corrections in a terminal (``iris review``), beside the chat adapters' admin review.

A correction is someone's better answer to one of the bot's replies; it becomes
training data only once a reviewer approves it (as proposed, or edited). The
desk shows the conversation up to the reply, the reply, and the proposal, and
stores who decided what and when (the store's ``reviewer``/``reviewed_at``).

It works on the ``ConversationStore`` port, so it needs no models and no SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bots.render import printable
from core.audit import memory_entry, review_entry
from core.domain import Correction, CorrectionStatus, Role, Turn
from core.memory import CorrectionMemory
from core.ports import AuditLog, ConversationStore

HELP = "[a]pprove  [e]dit, then approve  [r]eject  [s]kip  [q]uit"


class ReviewError(LookupError):
    """A correction that cannot be reviewed as asked; the message is for the reviewer."""


@dataclass(frozen=True)
class ReviewTally:
    approved: int = 0
    rejected: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return f"{self.approved} approved, {self.rejected} rejected, {self.skipped} skipped"


class ReviewDesk:
    """Lists, shows and decides corrections as one reviewer."""

    def __init__(
        self,
        store: ConversationStore,
        reviewer: str,
        context_turns: int = 6,
        audit: AuditLog | None = None,
        memory: CorrectionMemory | None = None,
    ) -> None:
        self.store = store
        self.reviewer = reviewer
        self.context_turns = context_turns
        self.audit = audit
        self.memory = memory  # follows each decision at once, as the chats' review does

    def corrections(self, status: CorrectionStatus | None = CorrectionStatus.PENDING) -> list[Correction]:
        return self.store.corrections(status)

    def find(self, correction_id: int) -> Correction:
        for correction in self.store.corrections(None):
            if correction.id == correction_id:
                return correction
        raise ReviewError(f"there is no correction {correction_id}")

    def context(self, correction: Correction) -> list[Turn]:
        """The conversation up to and including the question the reply answered."""
        reply = self.store.get_turn(correction.turn_id)
        if reply is None:
            return []
        return self.store.history(reply.conversation_id, reply.id, self.context_turns)

    def decide(self, correction_id: int, approve: bool, text: str | None = None) -> tuple[Correction, str]:
        """Approve (with ``text`` replacing the proposal, if given) or reject; say what changed."""
        before = self.find(correction_id)
        if not approve and text:
            raise ReviewError("--text goes with --approve: a rejected correction keeps its text")
        if approve and text is not None and not text.strip():
            raise ReviewError("the corrected answer is empty")
        after = self.store.review_correction(correction_id, approve, self.reviewer, text)
        if self.audit is not None:
            self.audit.record_audit(self.reviewer, *review_entry(after, edited=approve and bool(text)))
        if self.memory is not None:
            entry = memory_entry(after, self.memory.learn(after))
            if self.audit is not None and entry is not None:
                self.audit.record_audit(self.reviewer, *entry)
        note = f"correction {after.id} {after.status.value} by {after.reviewer}"
        if before.status is not CorrectionStatus.PENDING:
            note += f" (it was {before.status.value} by {before.reviewer or '?'})"
        return after, note

    # --- showing -------------------------------------------------------------------

    def show(self, correction: Correction) -> str:
        """The whole correction for a terminal: people's text without control, bidi or invisible characters."""
        who = printable(correction.person.display_name or correction.person.user_id)
        lines = [
            f"── correction #{correction.id} · {correction.status.value} · from {who} "
            f"({correction.person.platform}) · {correction.created_at:%Y-%m-%d %H:%M} UTC ──",
        ]
        for turn in self.context(correction):
            speaker = "person" if turn.role is Role.USER else "Iris"
            voice = " 🎤" if turn.from_voice else ""
            lines.append(f"  {speaker:>6}{voice}: {_indent(turn.text or '')}")
        lines += [
            f"  Iris replied: {_indent(correction.original_reply or '(reply gone)')}",
            f"  proposed:     {_indent(correction.text)}",
        ]
        hidden = len(correction.text) - len(printable(correction.text))
        if hidden:
            lines.append(
                f"  ⚠ {hidden} hidden character(s) in the proposal are not shown; approval stores them."
            )
        if correction.reviewer:
            lines.append(f"  reviewed by {correction.reviewer} at {correction.reviewed_at:%Y-%m-%d %H:%M} UTC")
        if correction.served:
            lines.append(f"  answered {correction.served} later question(s) from the correction memory")
        return "\n".join(lines)

    def as_json(self, correction: Correction) -> dict[str, Any]:
        return {
            "id": correction.id,
            "status": correction.status.value,
            "turn_id": correction.turn_id,
            "person": {
                "platform": correction.person.platform,
                "user_id": correction.person.user_id,
                "display_name": correction.person.display_name,
            },
            "context": [
                {"role": turn.role.value, "text": turn.text, "from_voice": turn.from_voice}
                for turn in self.context(correction)
            ],
            "prompt": correction.prompt,
            "original_reply": correction.original_reply,
            "text": correction.text,
            "created_at": correction.created_at.isoformat(),
            "reviewer": correction.reviewer,
            "reviewed_at": correction.reviewed_at.isoformat() if correction.reviewed_at else None,
            "served": correction.served,
        }

    # --- the interactive loop -----------------------------------------------------------

    def run(self, read_line: Callable[[str], str | None], write: Callable[[str], None]) -> ReviewTally:
        """Go through the pending corrections one by one until they are done or the reviewer quits."""
        pending = self.corrections()
        if not pending:
            write("No corrections are waiting for review.\n")
            return ReviewTally()
        tally = {"approved": 0, "rejected": 0, "skipped": 0}
        write(f"{len(pending)} correction(s) to review. {HELP}\n")
        for number, correction in enumerate(pending, 1):
            write(f"\n[{number}/{len(pending)}] {self.show(correction)}\n")
            outcome = self._ask(correction, read_line, write)
            if outcome == "quit":
                break
            tally[outcome] += 1
        result = ReviewTally(**tally)
        write(f"\n{result}.\n")
        return result

    def _ask(
        self, correction: Correction, read_line: Callable[[str], str | None], write: Callable[[str], None]
    ) -> str:
        while True:
            answer = read_line("review> ")
            if answer is None:
                return "quit"
            key = answer.strip().lower()[:1]
            if key == "a":
                write(self.decide(correction.id, True)[1] + "\n")
                return "approved"
            if key == "e":
                text = read_line("corrected answer> ")
                if text is None:
                    return "quit"
                if not text.strip():
                    write("An empty answer cannot be approved; choose again.\n")
                    continue
                write(self.decide(correction.id, True, text)[1] + "\n")
                return "approved"
            if key == "r":
                write(self.decide(correction.id, False)[1] + "\n")
                return "rejected"
            if key == "s":
                return "skipped"
            if key == "q":
                return "quit"
            write(f"Type a, e, r, s or q. {HELP}\n")


def _indent(text: str) -> str:
    # printable: a terminal would run ANSI escapes and reorder around bidi overrides.
    return printable(text).strip().replace("\n", "\n" + " " * 16)
