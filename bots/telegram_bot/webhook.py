"""The webhook server: Telegram's deliveries, with a body larger than any update refused unread.

python-telegram-bot's own server (``Updater.start_webhook``) buffers a whole request, up to
tornado's default of 100 MB, before it looks at the secret. This one refuses a body larger than
any update (413) from its headers, keeps nothing of a request without the secret (403), and
otherwise hands each update to the application's update queue as PTB's server does (with a
database, that queue stores it before Telegram hears "200 OK": ``bots.telegram_bot.inbox``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from telegram import Bot, Update
from telegram.error import BadRequest, NetworkError
from telegram.ext import ExtBot
from tornado.httpserver import HTTPServer

from bots.settings import Settings

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Telegram's updates are a few kilobytes (a message holds at most 4,096 characters, a caption
# 1,024, plus entities and the message replied to); no real one comes near a megabyte.
MAX_BODY_BYTES = 1 << 20
# Telegram sends a delivery at once: a connection trickling its body is not Telegram.
BODY_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0


def derived_secret(token: str) -> str:
    """The secret every process serving ``token`` derives alike, when none is configured.

    HMAC-SHA256 keyed with the token: 64 hex digits (Telegram allows 1-256 of
    ``[A-Za-z0-9_-]``), from which the token cannot be recovered. A random secret per
    start would make each starting process re-register the webhook with its own secret
    and every other process refuse Telegram's deliveries.
    """
    return hmac.new(token.encode(), b"iris-webhook", hashlib.sha256).hexdigest()


def webhook_secret(settings: Settings) -> str:
    """``TELEGRAM_WEBHOOK_SECRET`` checked the way Telegram checks it, or the one derived from the token."""
    configured = settings.telegram_webhook_secret.get_secret_value() if settings.telegram_webhook_secret else ""
    if not configured:
        token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
        return derived_secret(token)
    # Telegram would refuse setWebhook with it.
    if not SECRET_PATTERN.fullmatch(configured):
        raise ValueError("TELEGRAM_WEBHOOK_SECRET may only hold A-Z, a-z, 0-9, _ and - (1 to 256 characters)")
    return configured


@tornado.web.stream_request_body
class Deliveries(tornado.web.RequestHandler):
    """One POST from Telegram: checked by its headers, then read (at most ``MAX_BODY_BYTES``) and queued."""

    SUPPORTED_METHODS = ("POST",)

    def initialize(self, bot: Bot, queue: asyncio.Queue[Any], secret: str) -> None:
        self.bot, self.queue, self.secret = bot, queue, secret
        self.body = bytearray()
        self.signed = False

    def prepare(self) -> None:
        # Called once the headers are in (stream_request_body): raising here answers at once and
        # closes the connection, so a body over the limit is never read.
        length = self.request.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise tornado.web.HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        given = self.request.headers.get(SECRET_HEADER, "")
        self.signed = hmac.compare_digest(given.encode(), self.secret.encode())

    def data_received(self, chunk: bytes) -> None:
        # Bounded: the server refuses a chunked body longer than MAX_BODY_BYTES too. An unsigned
        # body is read (so that its sender gets a clean 403, not a reset) but not kept.
        if self.signed:
            self.body += chunk

    async def post(self) -> None:
        if not self.signed:
            raise tornado.web.HTTPError(HTTPStatus.FORBIDDEN)
        try:
            data = json.loads(self.body)
            update = Update.de_json(data, self.bot) if isinstance(data, dict) else None
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            log.warning("a webhook delivery was not a Telegram update (%s)", type(error).__name__)
            update = None
        if update is None:
            raise tornado.web.HTTPError(HTTPStatus.BAD_REQUEST)
        if isinstance(self.bot, ExtBot):
            self.bot.insert_callback_data(update)  # as PTB's server does; a no-op without that feature
        await self.queue.put(update)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Not tornado's access log: strangers' refused requests would fill it at warning level.
    request = handler.request
    log.debug(
        "webhook %s %s from %s: %d", request.method, request.path, request.remote_ip, handler.get_status()
    )


class WebhookServer:
    """The local server Telegram (or the reverse proxy in front) posts updates to, and its registration."""

    def __init__(self, bot: Bot, queue: asyncio.Queue[Any], settings: Settings) -> None:
        self.bot, self.settings = bot, settings
        self.url = settings.telegram_webhook_url.strip()
        self.secret = webhook_secret(settings)
        path = (settings.telegram_webhook_path or urlsplit(self.url).path).strip("/")
        routes = [
            (
                rf"/{re.escape(path)}/?" if path else r"/",
                Deliveries,
                {"bot": bot, "queue": queue, "secret": self.secret},
            )
        ]
        self.server = HTTPServer(
            tornado.web.Application(routes, log_function=_log_request),
            max_body_size=MAX_BODY_BYTES,
            body_timeout=BODY_TIMEOUT_S,
            idle_connection_timeout=IDLE_TIMEOUT_S,
        )

    async def start(self, allowed_updates: list[str]) -> None:
        """Listen, then tell Telegram where to deliver (retrying while it is out of reach)."""
        self.server.listen(self.settings.telegram_webhook_port, address=self.settings.telegram_webhook_listen)
        try:
            await self._register(allowed_updates)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()

    async def _register(self, allowed_updates: list[str]) -> None:
        delay = 1.0
        while True:
            try:
                await self.bot.set_webhook(
                    self.url,
                    secret_token=self.secret,
                    allowed_updates=allowed_updates,
                    max_connections=self.settings.telegram_webhook_max_connections,
                )
                return
            except BadRequest as error:  # a NetworkError to PTB, but waiting will not change Telegram's mind
                log.error("Telegram refused the webhook %s: %s", self.url, error)
                raise
            except NetworkError as error:
                log.warning("cannot register the webhook with Telegram (%s); retrying in %.0f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
