"""Spoken replies on Telegram: ``sendVoice`` with OGG/Opus and its duration, so the chat shows a voice note.

A person whose privacy settings refuse voice messages (Telegram Premium can) gets the same
audio as an audio file instead.
"""

from __future__ import annotations

import logging
import math

from telegram.error import BadRequest

from bots.telegram_bot.outbox import Outbox, Target
from core.domain import Speech

log = logging.getLogger(__name__)

FILENAME = "iris-reply.ogg"


async def send_voice(outbox: Outbox, target: Target, speech: Speech) -> int:
    """Post ``speech`` as a voice note in answer to the person's message; return its message id."""
    reply = target.reply_parameters
    duration = max(1, math.ceil(speech.seconds))
    try:
        sent = await outbox.call(
            lambda: outbox.bot.send_voice(
                target.chat_id,
                speech.ogg,
                duration=duration,
                filename=FILENAME,
                message_thread_id=target.thread_id,
                reply_parameters=reply,
            )
        )
    except BadRequest as refused:
        if "voice_messages_forbidden" not in refused.message.lower():
            raise
        log.info("Telegram refused a voice note in chat %s; sending it as an audio file", target.chat_id)
        sent = await outbox.call(
            lambda: outbox.bot.send_audio(
                target.chat_id,
                speech.ogg,
                duration=duration,
                filename=FILENAME,
                title="Iris's reply",
                message_thread_id=target.thread_id,
                reply_parameters=reply,
            )
        )
    return sent.message_id
