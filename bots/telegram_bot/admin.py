"""Admin commands: /stats, /ab, /review of the suggested answers waiting for approval, /retrain, /audit.

What they show is for admins only (people's words in the review cards, ids and
consent changes in the audit trail), so in a group they are answered in the
admin's private chat, or refused with a sentence saying where to use them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from telegram import InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import ContextTypes

from bots.render import format_ab, format_audit, format_stats, review_card
from bots.splitting import split_message
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.buttons import parse_review, review_keyboard
from bots.telegram_bot.formatting import Rendered, plain_text
from bots.telegram_bot.outbox import Target
from core.admin import RetrainBusy
from core.domain import Correction
from core.i18n import N_, _, ngettext
from core.ports import AlreadyReviewed

log = logging.getLogger(__name__)

# In the language of who reads them (``core.i18n``): an admin's, or the person refused.
ADMINS_ONLY = N_("That command is for admins.")
PRIVATE_ONLY = N_(
    "/{command} shows what people wrote, so I answer it only in a private chat: "
    "open a chat with me, press Start, and send /{command} there."
)
SENT_PRIVATELY = N_("I've answered /{command} in our private chat.")
ALREADY_DECIDED = N_("Suggested answer #{id} was already reviewed, or no longer exists; nothing changed.")
REVIEWERS_ONLY = N_("Only admins can review suggested answers.")
SUGGESTION_GONE = N_("That suggested answer no longer exists.")
REVIEW_PAGE = 10
AUDIT_LINES = 30
TEXT_LIMIT = 4096
# A card's last message gains "✅ Approved by <name>" when reviewed: leave room for it.
CARD_LIMIT = TEXT_LIMIT - 256

Outgoing = tuple[Rendered, InlineKeyboardMarkup | None]


def correction_messages(correction: Correction) -> list[str]:
    """A correction's whole text as a reviewer sees it, in messages within Telegram's limit."""
    return review_card(correction, CARD_LIMIT)


def _cannot_reach(error: Exception) -> bool:
    """Whether Telegram refused to message a person who never opened a chat with the bot (or blocked it)."""
    return isinstance(error, Forbidden) or (
        isinstance(error, BadRequest) and "chat not found" in error.message.lower()
    )


class Admin:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def _allowed(self, update: Update) -> bool:
        if self.adapter.is_admin(update):
            return True
        if update.effective_message is not None and await self.adapter.admitted(update):
            target = self.adapter.target(update.effective_message)
            await self.adapter.outbox.send(target, plain_text(_(ADMINS_ONLY)))
        return False

    async def _answer(self, update: Update, command: str, messages: Sequence[Outgoing]) -> Target | None:
        """Send ``messages`` where only the admin sees them; return where they went, None if refused.

        In a private chat that is the chat itself. In a group it is the admin's private chat,
        which Telegram refuses until the admin has started the bot: then the group hears where
        to ask instead, and nothing else.
        """
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not messages:
            return None
        outbox = self.adapter.outbox
        if not self.adapter.is_group(message):
            target = self.adapter.target(message)
        else:
            target = Target(user.id)
            try:
                await outbox.send(target, *messages[0])
            except (Forbidden, BadRequest) as error:
                if not _cannot_reach(error):
                    raise
                log.info(
                    "admin %s cannot be messaged privately (%s); refused /%s in a group",
                    user.id,
                    error,
                    command,
                )
                await outbox.send(
                    self.adapter.target(message), plain_text(_(PRIVATE_ONLY).format(command=command))
                )
                return None
            messages = messages[1:]
        for text, markup in messages:
            await outbox.send(target, text, markup)
        if self.adapter.is_group(message):
            said = _(SENT_PRIVATELY).format(command=command)
            await outbox.send(self.adapter.target(message), plain_text(said))
        return target

    async def on_stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self._allowed(update):
            return
        stats = await self.adapter.service.admin.stats()
        await self._answer(update, "stats", [(plain_text(format_stats(stats)), None)])

    async def on_ab(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The running A/B test's figures (or the last one's), as ``iris models ab status`` shows them."""
        if not await self._allowed(update):
            return
        report = await self.adapter.service.admin.ab_status()
        await self._answer(update, "ab", [(plain_text(format_ab(report)), None)])

    async def on_review(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Each pending correction whole, in one or more messages; approve / reject under the last."""
        if not await self._allowed(update):
            return
        pending = await self.adapter.service.feedback.pending_corrections()
        # ✏️ Edit fills in the admin's input field only for a bot with inline mode on (BotFather).
        inline_edit = bool(context.bot.supports_inline_queries)
        messages: list[Outgoing] = []
        for correction in pending[:REVIEW_PAGE]:
            pieces = correction_messages(correction)
            messages += [(plain_text(piece), None) for piece in pieces[:-1]]
            messages.append((plain_text(pieces[-1]), review_keyboard(correction, inline_edit)))
        if not pending:
            messages.append((plain_text(_("No suggested answers are waiting for review.")), None))
        elif len(pending) > REVIEW_PAGE:
            more = len(pending) - REVIEW_PAGE
            waiting = ngettext(
                "{count} more is waiting; send /review again after these.",
                "{count} more are waiting; send /review again after these.",
                more,
            )
            messages.append((plain_text(waiting.format(count=more)), None))
        await self._answer(update, "review", messages)

    async def on_review_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        press = parse_review(query.data or "") if query else None
        if query is None or press is None:
            return
        outbox = self.adapter.outbox
        if not self.adapter.is_admin(update):
            await outbox.answer(query.id, _(REVIEWERS_ONLY), alert=True)
            return
        reviewer = query.from_user
        try:
            await self.adapter.service.feedback.review(
                press.correction_id, press.approve, f"telegram:{reviewer.id}", pending_only=True
            )
        except AlreadyReviewed:
            # Decided meanwhile (by another admin, or with ✏️ Edit): the first decision stands.
            await outbox.answer(query.id, _(ALREADY_DECIDED).format(id=press.correction_id), alert=True)
            return
        except LookupError:
            await outbox.answer(query.id, _(SUGGESTION_GONE))
            return
        await outbox.answer(query.id, _("✅ Approved.") if press.approve else _("❌ Rejected."))
        message = query.message
        if message is not None:
            shown = getattr(message, "text", None) or _("Correction #{id}").format(id=press.correction_id)
            verdict = _("✅ Approved by {who}") if press.approve else _("❌ Rejected by {who}")
            text = f"{shown}\n\n{verdict.format(who=reviewer.full_name)}"[:TEXT_LIMIT]
            await outbox.edit(message.chat.id, message.message_id, plain_text(text))

    async def on_audit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The latest lines of the audit trail; admins only, like everything it records."""
        if not await self._allowed(update):
            return
        entries = await self.adapter.service.admin.audit_trail()
        pieces = split_message(format_audit(entries[-AUDIT_LINES:]), TEXT_LIMIT)
        await self._answer(update, "audit", [(plain_text(piece), None) for piece in pieces])

    async def on_retrain(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Start a retrain in its own process; its result is posted where the admin reads admin answers.

        A run takes minutes, so the command answers at once and the result
        arrives as a new message (in a group: in the admin's private chat).
        """
        if not await self._allowed(update):
            return
        started = plain_text(_("Retraining on the reviewed feedback; I will post the result here."))
        target = await self._answer(update, "retrain", [(started, None)])
        if target is None:
            return
        actor = f"telegram:{update.effective_user.id}" if update.effective_user else "telegram:?"
        context.application.create_task(self._retrain_and_report(target, actor), update=update)

    async def _retrain_and_report(self, target: Target, actor: str) -> None:
        try:
            outcome = await self.adapter.service.admin.retrain(actor=actor)
            text = outcome.summary
        except RetrainBusy:
            text = _("A retrain is already running; its result will be posted when it ends.")
        except Exception:
            log.exception("the retrain could not be run")
            text = _("The retrain could not be run; the active model is unchanged. The log has the details.")
        await self.adapter.outbox.send(target, plain_text(text))
