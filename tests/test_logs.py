import io
import logging

from bots.logs import configure_logging
from bots.settings import Settings
from bots.telegram_bot.webhook import derived_secret


def test_tokens_never_reach_the_log() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        telegram_bot_token="123456:AAH-telegram-secret",
        discord_bot_token="discord.secret.token",
        log_level="INFO",
    )
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("httpx").level
    stream = io.StringIO()
    configure_logging(settings, stream)
    try:
        logging.getLogger("telegram.ext").warning(
            "HTTP Request: POST %s failed", "https://api.telegram.org/bot123456:AAH-telegram-secret/getUpdates"
        )
        logging.getLogger("discord.client").error("login with discord.secret.token refused")
        logging.getLogger("telegram.ext").warning(
            "setWebhook secret_token=%s", derived_secret("123456:AAH-telegram-secret")
        )
        logging.getLogger("httpx").info("HTTP Request: GET https://example.org 200")  # quiet at INFO
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(saved[2])
    written = stream.getvalue()
    assert "telegram-secret" not in written and "discord.secret.token" not in written
    assert "https://api.telegram.org/bot********/getUpdates failed" in written
    assert "login with ******** refused" in written
    assert "setWebhook secret_token=********" in written  # the secret derived when none is set
    assert "example.org" not in written
