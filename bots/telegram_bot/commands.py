"""The commands anyone may use: /start, /help, /reset, /consent, /voice, /language and /forget (confirmed)."""

from __future__ import annotations

from telegram import BotCommand, Update
from telegram.ext import ContextTypes

from bots.render import VOICE_ASK, format_forget, format_voice_choice, voice_choice
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.buttons import forget_keyboard, parse_forget
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.incoming import chat_of, person_of
from core.i18n import N_, _, translate

START = N_(
    """\
Hi! I'm Iris, a voice chat bot. Send me a voice note, an audio file or a text message and I'll answer.

What I store, and why:
• your messages (for voice notes, the words I heard, not the audio) and my replies, \
so that I can follow the conversation;
• your 👍/👎 ratings and the better answers you suggest with ✏️, so that my owner can train \
better versions of me (suggested answers are reviewed first).

/reset starts a new conversation. /forget deletes everything I have stored about you. /help lists the rest."""
)

HELP = N_(
    """\
Send a voice note, an audio file, a video note or text, and I'll answer. \
In a group, mention me or reply to one of my messages.

Under each answer: 👍 / 👎 to rate it, ✏️ to suggest a better one.

/reset – start a new conversation
/forget – delete everything stored about you
/cancel – stop suggesting a better answer
/consent yes|no – whether your rated conversations may train future versions of me
/voice on|off – my replies as voice notes too, or text only
/language xx|auto – the language I answer you in (a code such as de, es, ru); no code: shows it
/settings – this chat's persona, spoken replies, reply length and earlier turns (admins; \
in a private chat, you too where the admin allows it)
/stats, /review – for admins: figures, and the suggested answers waiting for review
/ab – for admins: the A/B test of a model version, ratings per arm
/retrain – for admins: train a new model on the reviewed feedback
/audit – for admins: the latest admin actions, consent changes and deletions
/persona – for admins, in a private chat: add, change and choose personas (/persona use NAME also in a group)
(Admins get these answers in a private chat with me, also when they ask in a group.)"""
)

FORGET_ASK = N_(
    "This deletes everything I have stored about you: your messages, my replies to them, "
    "your ratings and your suggested answers. It cannot be undone. Go ahead?"
)

# The command menu, registered once per catalog language (``menu``).
MENU_ENTRIES = [
    ("start", N_("What I am and what I store")),
    ("help", N_("How to talk to me")),
    ("reset", N_("Start a new conversation")),
    ("forget", N_("Delete everything stored about you")),
    ("cancel", N_("Stop suggesting a better answer")),
    ("consent", N_("yes or no: may your rated conversations train future versions?")),
    ("voice", N_("on or off: my replies as voice notes too")),
    ("language", N_("The language I answer you in: de, es, ru… or auto")),
    ("settings", N_("This chat's persona, spoken replies, reply length, earlier turns")),
]


def menu(language: str) -> list[BotCommand]:
    """The command menu in ``language`` (``setMyCommands`` with its ``language_code``)."""
    return [BotCommand(command, translate(description, language)) for command, description in MENU_ENTRIES]


CONSENT_ANSWERS = {"yes": True, "no": False}
CONSENT_ASK = N_(
    "Send /consent yes to let your rated conversations teach future versions of me, "
    "or /consent no to keep them out."
)
CONSENT_YES = N_("Thank you: your rated conversations may now help train future versions of me.")
CONSENT_NO = N_("Understood: your conversations will not be used to train future versions of me.")


class Commands:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def _reply(self, update: Update, text: str) -> None:
        if update.effective_message is not None:
            await self.adapter.outbox.send(self.adapter.target(update.effective_message), plain_text(text))

    async def on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The chat's persona's greeting, if it has one, then what Iris is and stores (always whole)."""
        message = update.effective_message
        if message is None or not await self.adapter.admitted(update):
            return
        greeting = await self.adapter.service.personas.greeting(chat_of(message))
        await self._reply(update, f"{greeting}\n\n{_(START)}" if greeting else _(START))

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if await self.adapter.admitted(update):
            await self._reply(update, _(HELP))

    async def on_reset(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        await self.adapter.service.feedback.drop_awaited_correction(chat_of(message), person_of(user))
        shared = self.adapter.shared_history(message)
        had_one = await self.adapter.service.privacy.reset(chat_of(message), person_of(user), shared)
        if had_one:
            await self._reply(update, _("New conversation: I've put our earlier messages aside."))
        else:
            await self._reply(update, _("We haven't talked yet here, so there was nothing to reset."))

    async def on_consent(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        answer = CONSENT_ANSWERS.get(" ".join(context.args or []).strip().lower())
        if answer is None:
            await self._reply(update, _(CONSENT_ASK))
            return
        await self.adapter.service.privacy.set_consent(person_of(user), answer)
        await self._reply(update, _(CONSENT_YES if answer else CONSENT_NO))

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        answer = voice_choice(" ".join(context.args or []))
        if answer is None:
            await self._reply(update, _(VOICE_ASK))
            return
        available = await self.adapter.service.replies.set_voice(person_of(user), answer)
        await self._reply(update, format_voice_choice(answer, available))

    async def on_language(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/language xx`` sets the person's language, ``auto`` goes back to detecting it, none shows it."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        answer = await self.adapter.service.languages.command(person_of(user), " ".join(context.args or []))
        await self._reply(update, answer)

    async def on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Ask first. Not behind the allowlist: anyone may have their data deleted."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        target = self.adapter.target(message)
        await self.adapter.outbox.send(target, plain_text(_(FORGET_ASK)), forget_keyboard(user.id))

    async def on_forget_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        press = parse_forget(query.data or "") if query else None
        if query is None or press is None:
            return
        outbox = self.adapter.outbox
        if press.user_id != query.from_user.id:
            await outbox.answer(query.id, _("This button is for someone else."), alert=True)
            return
        if press.confirmed:
            report = await self.adapter.service.privacy.forget(person_of(query.from_user))
            await self.adapter.service.feedback.drop_awaited_corrections(person_of(query.from_user))
            text = format_forget(report)
        else:
            text = _("Kept everything; nothing was deleted.")
        await outbox.answer(query.id, _("Deleted.") if press.confirmed else _("Nothing deleted."))
        if query.message is not None:
            await outbox.edit(query.message.chat.id, query.message.message_id, plain_text(text))
