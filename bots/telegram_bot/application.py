"""Building the python-telegram-bot ``Application`` and running it on an event loop it does not own.

``iris run`` may serve Telegram beside Discord in one process with one loaded
model, so this uses PTB's ``initialize``/``start``/``updater`` API rather than
``run_polling``, which would take over the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    BaseRateLimiter,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bots.settings import Settings
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.admin import Admin
from bots.telegram_bot.again import Again
from bots.telegram_bot.buttons import (
    AGAIN_PATTERN,
    FIX_PATTERN,
    FORGET_PATTERN,
    PICK_PATTERN,
    RATE_PATTERN,
    REVIEW_EDIT_PATTERN,
    REVIEW_PATTERN,
)
from bots.telegram_bot.commands import Commands, menu
from bots.telegram_bot.conversation import Conversation
from bots.telegram_bot.edits import CorrectionEdits, EditMessage
from bots.telegram_bot.feedback import Feedback
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.inbox import DurableUpdates
from bots.telegram_bot.limits import ChatRateLimiter
from bots.telegram_bot.outbox import Outbox
from bots.telegram_bot.persona_admin import PersonaCommands
from bots.telegram_bot.settings_menu import SETTINGS_PATTERN, SettingsMenu
from bots.telegram_bot.webhook import WebhookServer
from core import i18n
from core.i18n import N_, _
from core.ports import Inbox
from core.service import ChatService

log = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
# Telegram holds a getUpdates call open this long when there is nothing to deliver.
POLL_TIMEOUT_S = 30
APOLOGY = N_("Sorry, something went wrong on my side. Please try again.")

AUDIO = filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.Document.AUDIO
CONVERSATION = filters.UpdateType.MESSAGE & ((filters.TEXT & ~filters.COMMAND) | AUDIO)
PRIVATE_OTHER = filters.UpdateType.MESSAGE & filters.ChatType.PRIVATE


class ChatOrderedProcessor(BaseUpdateProcessor):
    """Many chats and people at once, but one person's messages in a chat in the order they came.

    In a group, each person's notes are answered in their order while other
    people's are answered alongside (the service serves people round-robin).
    Button presses and commands never wait, so a rating is stored and /help is
    answered while a reply is still streaming in the same chat.
    """

    def __init__(
        self,
        max_concurrent_updates: int = 256,
        on_done: Callable[[object], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[tuple[int, int | None], asyncio.Lock] = {}
        self._users: Counter[tuple[int, int | None]] = Counter()
        self.on_done = on_done  # told when an update was handled (the durable inbox)

    async def do_process_update(self, update: object, coroutine: Awaitable[object]) -> None:
        try:
            await self._in_order(update, coroutine)
        finally:
            if self.on_done is not None:
                await self.on_done(update)

    async def _in_order(self, update: object, coroutine: Awaitable[object]) -> None:
        message = update.message if isinstance(update, Update) else None
        if message is None or (message.text or "").startswith("/"):
            await coroutine
            return
        key = (message.chat.id, message.from_user.id if message.from_user else None)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                await coroutine
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def build_application(
    service: ChatService,
    settings: Settings,
    inbox: Inbox | None = None,
    rate_limiter: BaseRateLimiter[Any] | None = None,
) -> Application:  # type: ignore[type-arg]
    """The PTB application with every Iris handler, talking to ``settings.telegram_base_url``.

    With an ``inbox``, every update is stored in the database before Telegram is told it
    arrived, and the processes sharing the database answer them (``bots.telegram_bot.inbox``).
    Sends are paced by ``rate_limiter``, by default Telegram's own limits (``ChatRateLimiter``);
    a test against a fake with shortened limits passes one with the same.
    """
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    if not token:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    builder = (
        Application.builder()
        .token(token)
        .base_url(settings.telegram_base_url)
        .base_file_url(settings.telegram_base_file_url)
        .rate_limiter(rate_limiter or ChatRateLimiter())
    )
    durable = None
    if inbox is not None:
        # Twice the replies written at once: enough that presses and commands do not wait, few
        # enough that another process with free slots gets the rest.
        durable = DurableUpdates(inbox, settings.inbox_lease_seconds, capacity=2 * settings.llm.parallel + 4)
    if durable is not None:
        builder = builder.update_queue(durable)
    application = builder.concurrent_updates(
        ChatOrderedProcessor(on_done=durable.finished if durable else None)
    ).build()
    adapter = Adapter(service, settings, Outbox(application.bot))
    if durable is not None:
        adapter.redelivered = durable.redelivered
        adapter.shown_for = durable.shown_for
        durable.speak = adapter.speak_to  # its set-aside notices in the sender's language
    _add_handlers(application, adapter)
    return application


def _add_handlers(application: Application, adapter: Adapter) -> None:  # type: ignore[type-arg]
    commands, conversation, admin = Commands(adapter), Conversation(adapter), Admin(adapter)
    feedback, again, edits = Feedback(adapter), Again(adapter), CorrectionEdits(adapter)
    settings_menu = SettingsMenu(adapter)
    # First, in a group of its own: the language of everything Iris writes while handling this update.
    application.add_handler(TypeHandler(Update, adapter.speak_their_language), group=-1)
    application.add_handlers(
        [
            CommandHandler("start", commands.on_start),
            CommandHandler("help", commands.on_help),
            CommandHandler("reset", commands.on_reset),
            CommandHandler("forget", commands.on_forget),
            CommandHandler("consent", commands.on_consent),
            CommandHandler("voice", commands.on_voice),
            CommandHandler("language", commands.on_language),
            CommandHandler("settings", settings_menu.on_settings),
            CommandHandler("cancel", feedback.on_cancel),
            CommandHandler("stats", admin.on_stats),
            CommandHandler("ab", admin.on_ab),
            CommandHandler("review", admin.on_review),
            CommandHandler("retrain", admin.on_retrain),
            CommandHandler("audit", admin.on_audit),
            CommandHandler("persona", PersonaCommands(adapter).on_persona),
            CallbackQueryHandler(feedback.on_rate, pattern=RATE_PATTERN),
            CallbackQueryHandler(feedback.on_fix, pattern=FIX_PATTERN),
            CallbackQueryHandler(again.on_again, pattern=AGAIN_PATTERN),
            CallbackQueryHandler(again.on_pick, pattern=PICK_PATTERN),
            CallbackQueryHandler(commands.on_forget_press, pattern=FORGET_PATTERN),
            CallbackQueryHandler(admin.on_review_press, pattern=REVIEW_PATTERN),
            CallbackQueryHandler(edits.on_edit_press, pattern=REVIEW_EDIT_PATTERN),
            CallbackQueryHandler(settings_menu.on_press, pattern=SETTINGS_PATTERN),
            CallbackQueryHandler(feedback.on_unknown_press),  # last: any other data
            # Before the conversation: an admin's edited answer is not a question for the model.
            MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT & EditMessage(), edits.on_edit),
            MessageHandler(CONVERSATION, conversation.on_message),
            MessageHandler(PRIVATE_OTHER, conversation.on_unsupported),
        ]
    )

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("error while handling a Telegram update", exc_info=context.error)
        if not isinstance(update, Update):
            return
        with contextlib.suppress(TelegramError):
            if update.callback_query is not None:
                await adapter.outbox.answer(update.callback_query.id, _(APOLOGY))
            elif update.effective_message is not None:
                await adapter.outbox.send(adapter.target(update.effective_message), plain_text(_(APOLOGY)))

    application.add_error_handler(on_error)


async def _initialize(application: Application) -> None:  # type: ignore[type-arg]
    """``initialize`` asks Telegram who the bot is; wait for the network rather than give up."""
    delay = 1.0
    while True:
        try:
            await application.initialize()
            return
        except InvalidToken as error:
            log.error("Telegram refused TELEGRAM_BOT_TOKEN (%s); check it with @BotFather", error)
            raise
        except NetworkError as error:
            log.warning("cannot reach Telegram (%s); retrying in %.0f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def _log_polling_error(error: TelegramError) -> None:
    # PTB retries by itself (backing off to 30 s); one line, not a traceback per retry.
    log.warning("polling Telegram failed (%s); retrying", error)


async def _start_updates(application: Application, settings: Settings) -> WebhookServer | None:  # type: ignore[type-arg]
    """Poll Telegram, or with ``TELEGRAM_WEBHOOK_URL`` serve the webhook (returned, to be stopped)."""
    url = settings.telegram_webhook_url.strip()
    if not url:
        updater = application.updater
        assert updater is not None  # built with the default updater
        await updater.start_polling(
            timeout=POLL_TIMEOUT_S,
            bootstrap_retries=-1,
            allowed_updates=ALLOWED_UPDATES,
            error_callback=_log_polling_error,
        )
        log.info("Telegram bot @%s is polling", application.bot.username)
        return None
    # Iris's own server, not PTB's Updater.start_webhook, which reads a whole body before its checks.
    webhook = WebhookServer(application.bot, application.update_queue, settings)
    await webhook.start(ALLOWED_UPDATES)
    log.info("Telegram bot @%s takes updates at %s", application.bot.username, url)
    return webhook


async def _set_menus(application: Application) -> None:  # type: ignore[type-arg]
    """The command menu in English for everyone, and in each catalog's language for its speakers."""
    for language in i18n.LANGUAGES:
        code = None if language == i18n.DEFAULT else language
        try:
            await application.bot.set_my_commands(menu(language), language_code=code)
        except TelegramError as error:
            log.warning("could not set the command menu (%s): %s", language, error)


@contextlib.asynccontextmanager
async def running(application: Application, settings: Settings) -> AsyncIterator[None]:  # type: ignore[type-arg]
    """Run the bot (polling or webhook per the settings) for the duration of the block."""
    await _initialize(application)
    durable = application.update_queue if isinstance(application.update_queue, DurableUpdates) else None
    webhook = None
    try:
        await application.start()
        if durable is not None:
            durable.start(application.bot)
        await _set_menus(application)
        webhook = await _start_updates(application, settings)
        yield
    finally:
        if webhook is not None:
            await webhook.stop()
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        if durable is not None:
            await durable.stop()  # what it claimed and did not finish is claimed again by others
        if application.running:
            await application.stop()
        await application.shutdown()


async def serve(service: ChatService, settings: Settings, inbox: Inbox | None = None) -> None:
    """Answer Telegram until cancelled (``iris run telegram``)."""
    application = build_application(service, settings, inbox)
    async with running(application, settings):
        await asyncio.Event().wait()
