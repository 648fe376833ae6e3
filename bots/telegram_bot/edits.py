"""An admin edits a suggested answer in the chat, and the edited text is approved.

Telegram cannot prefill a reply, so the card's ✏️ Edit offers the text in one of two ways
(``buttons.review_keyboard``): it fills in the admin's input field with
"@bot fix 42: <the text>" (a bot with inline mode on), or it sends a prompt quoting the text
to copy, to be answered with a reply. Either message approves correction 42 with the text
it carries. Nothing is kept between the press and the message: the correction's id travels
in the message itself, so an edit sent after a restart, or to another process, still lands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from html import escape

from telegram import ForceReply, Message, Update, User
from telegram.ext import ContextTypes, filters

from bots.render import printable
from bots.splitting import split_message
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.admin import ALREADY_DECIDED, REVIEWERS_ONLY, TEXT_LIMIT, correction_messages
from bots.telegram_bot.buttons import parse_review_edit
from bots.telegram_bot.formatting import Rendered, plain_text
from bots.telegram_bot.outbox import Target
from core import i18n
from core.domain import Correction
from core.i18n import N_, _

EMPTY = N_("The edited answer is empty, so nothing was approved. Send the answer as it should read.")
PRIVATE_ONLY = N_("Edit suggested answers in our private chat, where /review shows them.")
# The prompt's first words carry the correction's id; a reply to it is read back from them
# (``prompt_id``), in whichever catalog's language the prompt was written.
PROMPT = N_(
    "✏️ Suggested answer #{id}: reply to this message with the answer as it should read; "
    "I approve it as you send it."
)
PROMPT_TEXT = N_("Its text now (tap to copy):")
# "@iris_bot fix 42: the edited answer", as the ✏️ Edit button fills it in (buttons.edit_query).
# At most 18 digits: any such id fits the database's integers (a longer one is not an edit).
INLINE_EDIT = re.compile(r"^@(?P<bot>\w+)\s+fix\s+(?P<id>[0-9]{1,18}):(?P<text>.*)$", re.DOTALL | re.IGNORECASE)
# Room for the prompt's words in its first message.
PIECE_LIMIT = TEXT_LIMIT - 512


@cache
def prompt_id() -> re.Pattern[str]:
    """The start of ``PROMPT`` in every catalog's language, up to the id and its next words.

    The admin may have changed ``/language`` between the prompt and their reply, so each
    language's prompt is read back, not only the current one's.
    """
    starts = set()
    for language in i18n.LANGUAGES:
        before, after = i18n.translate(PROMPT, language).split("{id}", 1)
        starts.add(re.escape(before) + r"(\d+)" + re.escape(after[:12]))
    return re.compile("^(?:" + "|".join(sorted(starts)) + ")")


@dataclass(frozen=True)
class Edit:
    correction_id: int
    text: str


def edit_in(message: Message) -> Edit | None:
    """The edit a message carries: "@bot fix 42: text", or a reply to the bot's prompt for #42."""
    bot = message.get_bot()
    text = message.text or ""
    inline = INLINE_EDIT.match(text)
    if inline and inline["bot"].casefold() == (bot.username or "").casefold():
        return Edit(int(inline["id"]), inline["text"].strip())
    prompt = message.reply_to_message
    if prompt is None or prompt.from_user is None or prompt.from_user.id != bot.id:
        return None
    asked = prompt_id().match(prompt.text or "")
    if asked is None:
        return None
    return Edit(int(next(group for group in asked.groups() if group)), text.strip())


class EditMessage(filters.MessageFilter):
    """Messages that carry an edit (``edit_in``); they are never answered as questions."""

    def filter(self, message: Message) -> bool:
        return edit_in(message) is not None


def prompt_messages(correction: Correction) -> list[Rendered]:
    """The prompt for an edit, with the current text in code blocks (one tap copies a block)."""
    head = f"{_(PROMPT).format(id=correction.id)}\n\n{_(PROMPT_TEXT)}"
    pieces = split_message(printable(correction.text).strip() or "-", PIECE_LIMIT)
    messages = [Rendered(f"<pre>{escape(piece, quote=False)}</pre>", piece) for piece in pieces]
    first = messages[0]
    messages[0] = Rendered(f"{escape(head, quote=False)}\n\n{first.html}", f"{head}\n\n{first.plain}")
    return messages


class CorrectionEdits:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def on_edit_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """✏️ Edit where the text cannot fill in the input field: a prompt to reply to."""
        query = update.callback_query
        correction_id = parse_review_edit(query.data or "") if query else None
        if query is None or correction_id is None:
            return
        outbox = self.adapter.outbox
        if not self.adapter.is_admin(update):
            await outbox.answer(query.id, _(REVIEWERS_ONLY), alert=True)
            return
        correction = await self.adapter.service.feedback.pending_correction(correction_id)
        if correction is None or query.message is None:
            await outbox.answer(query.id, _(ALREADY_DECIDED).format(id=correction_id))
            return
        await outbox.answer(query.id, _("Reply to my next message with the edited answer."))
        card = query.message
        prompt, *rest = prompt_messages(correction)
        chat = card.chat.id
        asking = ForceReply(input_field_placeholder=_("The answer as it should read…"))
        await outbox.send(Target(chat, None, card.message_id), prompt, asking)
        for piece in rest:
            await outbox.send(Target(chat), piece)

    async def on_edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Approve a correction with the text an admin's message carries, and show the approved card."""
        message, user = update.effective_message, update.effective_user
        edit = edit_in(message) if message is not None else None
        if message is None or user is None or edit is None:
            return
        target = self.adapter.target(message)
        outbox = self.adapter.outbox
        if not self.adapter.is_admin(update):
            if await self.adapter.admitted(update):
                await outbox.send(target, plain_text(_(REVIEWERS_ONLY)))
            return
        if self.adapter.is_group(message):
            # The approved card shows people's words: only in the admin's private chat.
            await outbox.send(target, plain_text(_(PRIVATE_ONLY)))
            return
        if not edit.text:
            await outbox.send(target, plain_text(_(EMPTY)))
            return
        await self._approve(edit, user, target)

    async def _approve(self, edit: Edit, user: User, target: Target) -> None:
        reviewer = f"telegram:{user.id}"
        try:
            decided = await self.adapter.service.feedback.review(
                edit.correction_id, True, reviewer, edit.text, pending_only=True
            )
        except LookupError:  # decided meanwhile (AlreadyReviewed), or deleted
            said = _(ALREADY_DECIDED).format(id=edit.correction_id)
            await self.adapter.outbox.send(target, plain_text(said))
            return
        *pieces, last = correction_messages(decided)
        approved = _("✏️ Edited and ✅ approved by {who}").format(who=user.full_name)
        verdict = f"{last}\n\n{approved}"[:TEXT_LIMIT]
        for piece in [*pieces, verdict]:
            await self.adapter.outbox.send(target, plain_text(piece))
