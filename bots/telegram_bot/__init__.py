"""Telegram adapter (python-telegram-bot): voice notes in, streamed replies out, ratings in the chat.

``serve`` is what ``iris run telegram`` starts; ``build_application`` and
``running`` let tests drive the same application against a fake Bot API.
"""

from bots.telegram_bot.application import build_application, running, serve

__all__ = ["build_application", "running", "serve"]
