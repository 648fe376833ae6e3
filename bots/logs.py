"""Logging set-up that never writes a secret.

HTTP client libraries log request URLs, and a Telegram bot's token is part of
every Bot API URL; a filter on the handler masks each configured secret,
whichever library logged it.
"""

from __future__ import annotations

import logging
from typing import IO

from bots.settings import Settings

MASK = "********"
_configured_secrets: list[str] = []  # those of the settings that configured logging last


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret (by default the configured settings' ones) masked."""
    for secret in _configured_secrets if secrets is None else secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            record.msg, record.args = redact(message, self.secrets), None
        return True


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> None:
    """Log at ``IRIS_LOG_LEVEL`` to stderr (or ``stream``) with every token masked."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    secrets = [
        value.get_secret_value()
        for value in (settings.telegram_bot_token, settings.discord_bot_token, settings.telegram_webhook_secret)
        if value is not None
    ]
    if settings.telegram_bot_token is not None and settings.telegram_webhook_secret is None:
        from bots.telegram_bot.webhook import derived_secret  # PTB logs setWebhook's secret at DEBUG

        secrets.append(derived_secret(settings.telegram_bot_token.get_secret_value()))
    handler.addFilter(RedactSecrets(secrets))
    _configured_secrets[:] = secrets
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # One line per HTTP request is noise at INFO; warnings still come through.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
