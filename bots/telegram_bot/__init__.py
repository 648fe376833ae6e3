"""Telegram adapter (python-telegram-bot)."""
