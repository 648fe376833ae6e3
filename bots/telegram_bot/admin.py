"""Admin commands: /stats, /ab, /review of the suggested answers waiting for approval, /retrain."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ContextTypes

from bots.render import format_ab, format_audit, format_stats, split_message
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.buttons import parse_review, review_keyboard
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.outbox import Target
from core.domain import Correction
from core.service import RetrainBusy

log = logging.getLogger(__name__)

ADMINS_ONLY = "That command is for admins."
REVIEW_PAGE = 10
AUDIT_LINES = 30
TEXT_LIMIT = 4096
FIELD_CHARS = 900  # four fields of a correction stay well under the 4,096-character message limit


def _clip(text: str | None) -> str:
    text = (text or "-").strip()
    return text if len(text) <= FIELD_CHARS else text[: FIELD_CHARS - 1] + "…"


def format_correction(correction: Correction) -> str:
    author = correction.person.display_name or correction.person.user_id
    return (
        f"Correction #{correction.id} from {author} ({correction.person.platform})\n\n"
        f"Asked: {_clip(correction.prompt)}\n\n"
        f"Replied: {_clip(correction.original_reply)}\n\n"
        f"Suggested: {_clip(correction.text)}"
    )


class Admin:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def _allowed(self, update: Update) -> bool:
        if self.adapter.is_admin(update):
            return True
        if update.effective_message is not None and await self.adapter.admitted(update):
            target = self.adapter.target(update.effective_message)
            await self.adapter.outbox.send(target, plain_text(ADMINS_ONLY))
        return False

    async def on_stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self._allowed(update) or update.effective_message is None:
            return
        stats = await self.adapter.service.stats()
        target = self.adapter.target(update.effective_message)
        await self.adapter.outbox.send(target, plain_text(format_stats(stats)))

    async def on_ab(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The running A/B test's figures (or the last one's), as ``iris models ab status`` shows them."""
        if not await self._allowed(update) or update.effective_message is None:
            return
        report = await self.adapter.service.ab_status()
        target = self.adapter.target(update.effective_message)
        await self.adapter.outbox.send(target, plain_text(format_ab(report)))

    async def on_review(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """One message per pending correction, each with approve / reject buttons."""
        if not await self._allowed(update) or update.effective_message is None:
            return
        outbox, target = self.adapter.outbox, self.adapter.target(update.effective_message)
        pending = await self.adapter.service.pending_corrections()
        if not pending:
            await outbox.send(target, plain_text("No suggested answers are waiting for review."))
            return
        for correction in pending[:REVIEW_PAGE]:
            await outbox.send(target, plain_text(format_correction(correction)), review_keyboard(correction.id))
        if len(pending) > REVIEW_PAGE:
            more = len(pending) - REVIEW_PAGE
            await outbox.send(target, plain_text(f"{more} more are waiting; send /review again after these."))

    async def on_review_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        press = parse_review(query.data or "") if query else None
        if query is None or press is None:
            return
        outbox = self.adapter.outbox
        if not self.adapter.is_admin(update):
            await outbox.answer(query.id, "Only admins can review suggested answers.", alert=True)
            return
        reviewer = query.from_user
        try:
            await self.adapter.service.review(press.correction_id, press.approve, f"telegram:{reviewer.id}")
        except LookupError:
            await outbox.answer(query.id, "That suggested answer no longer exists.")
            return
        verdict = "✅ Approved" if press.approve else "❌ Rejected"
        await outbox.answer(query.id, f"{verdict}.")
        message = query.message
        if message is not None:
            shown = getattr(message, "text", None) or f"Correction #{press.correction_id}"
            text = f"{shown}\n\n{verdict} by {reviewer.full_name}"
            await outbox.edit(message.chat.id, message.message_id, plain_text(text))

    async def on_audit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The latest lines of the audit trail; admins only, like everything it records."""
        if not await self._allowed(update) or update.effective_message is None:
            return
        entries = await self.adapter.service.audit_trail()
        target = self.adapter.target(update.effective_message)
        for piece in split_message(format_audit(entries[-AUDIT_LINES:]), TEXT_LIMIT):
            await self.adapter.outbox.send(target, plain_text(piece))

    async def on_retrain(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Start a retrain in its own process; its result is posted to this chat when it ends.

        A run takes minutes, so the command answers at once and the result
        arrives as a new message.
        """
        if not await self._allowed(update) or update.effective_message is None:
            return
        target = self.adapter.target(update.effective_message)
        await self.adapter.outbox.send(
            target, plain_text("Retraining on the reviewed feedback; I will post the result here.")
        )
        actor = f"telegram:{update.effective_user.id}" if update.effective_user else "telegram:?"
        context.application.create_task(self._retrain_and_report(target, actor), update=update)

    async def _retrain_and_report(self, target: Target, actor: str) -> None:
        try:
            outcome = await self.adapter.service.retrain(actor=actor)
            text = outcome.summary
        except RetrainBusy:
            text = "A retrain is already running; its result will be posted when it ends."
        except Exception:
            log.exception("the retrain could not be run")
            text = "The retrain could not be run; the active model is unchanged. The log has the details."
        await self.adapter.outbox.send(target, plain_text(text))
