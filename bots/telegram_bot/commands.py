"""The commands anyone may use: /start, /help, /reset, /consent, /voice, /language and /forget (confirmed)."""

from __future__ import annotations

from telegram import BotCommand, Update
from telegram.ext import ContextTypes

from bots.render import VOICE_ASK, format_forget, format_voice_choice, voice_choice
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.buttons import forget_keyboard, parse_forget
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.incoming import chat_of, person_of

START = """\
Hi! I'm Iris, a voice chat bot. Send me a voice note, an audio file or a text message and I'll answer.

What I store, and why:
• your messages (for voice notes, the words I heard, not the audio) and my replies, \
so that I can follow the conversation;
• your 👍/👎 ratings and the better answers you suggest with ✏️, so that my owner can train \
better versions of me (suggested answers are reviewed first).

/reset starts a new conversation. /forget deletes everything I have stored about you. /help lists the rest."""

HELP = """\
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

FORGET_ASK = (
    "This deletes everything I have stored about you: your messages, my replies to them, "
    "your ratings and your suggested answers. It cannot be undone. Go ahead?"
)

MENU = [
    BotCommand("start", "What I am and what I store"),
    BotCommand("help", "How to talk to me"),
    BotCommand("reset", "Start a new conversation"),
    BotCommand("forget", "Delete everything stored about you"),
    BotCommand("cancel", "Stop suggesting a better answer"),
    BotCommand("consent", "yes or no: may your rated conversations train future versions?"),
    BotCommand("voice", "on or off: my replies as voice notes too"),
    BotCommand("language", "The language I answer you in: de, es, ru… or auto"),
    BotCommand("settings", "This chat's persona, spoken replies, reply length, earlier turns"),
]

CONSENT_ANSWERS = {"yes": True, "no": False}
CONSENT_ASK = (
    "Send /consent yes to let your rated conversations teach future versions of me, "
    "or /consent no to keep them out."
)
CONSENT_YES = "Thank you: your rated conversations may now help train future versions of me."
CONSENT_NO = "Understood: your conversations will not be used to train future versions of me."


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
        await self._reply(update, f"{greeting}\n\n{START}" if greeting else START)

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if await self.adapter.admitted(update):
            await self._reply(update, HELP)

    async def on_reset(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        await self.adapter.service.feedback.drop_awaited_correction(chat_of(message), person_of(user))
        shared = self.adapter.shared_history(message)
        had_one = await self.adapter.service.privacy.reset(chat_of(message), person_of(user), shared)
        if had_one:
            await self._reply(update, "New conversation: I've put our earlier messages aside.")
        else:
            await self._reply(update, "We haven't talked yet here, so there was nothing to reset.")

    async def on_consent(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        answer = CONSENT_ANSWERS.get(" ".join(context.args or []).strip().lower())
        if answer is None:
            await self._reply(update, CONSENT_ASK)
            return
        await self.adapter.service.privacy.set_consent(person_of(user), answer)
        await self._reply(update, CONSENT_YES if answer else CONSENT_NO)

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not await self.adapter.admitted(update):
            return
        answer = voice_choice(" ".join(context.args or []))
        if answer is None:
            await self._reply(update, VOICE_ASK)
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
        await self.adapter.outbox.send(target, plain_text(FORGET_ASK), forget_keyboard(user.id))

    async def on_forget_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        press = parse_forget(query.data or "") if query else None
        if query is None or press is None:
            return
        outbox = self.adapter.outbox
        if press.user_id != query.from_user.id:
            await outbox.answer(query.id, "This button is for someone else.", alert=True)
            return
        if press.confirmed:
            report = await self.adapter.service.privacy.forget(person_of(query.from_user))
            await self.adapter.service.feedback.drop_awaited_corrections(person_of(query.from_user))
            text = format_forget(report)
        else:
            text = "Kept everything; nothing was deleted."
        await outbox.answer(query.id, "Deleted." if press.confirmed else "Nothing deleted.")
        if query.message is not None:
            await outbox.edit(query.message.chat.id, query.message.message_id, plain_text(text))
