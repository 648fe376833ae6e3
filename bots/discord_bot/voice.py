"""Spoken replies on Discord: a real voice message, sent over discord.py's HTTP layer.

A voice message is a message with the IS_VOICE_MESSAGE flag (1 << 13), no text or embeds, and
one OGG/Opus attachment whose description carries ``duration_secs`` and a base64 ``waveform``
(at most 256 one-byte samples). discord.py 2.7's ``File`` cannot describe those two fields and
``Messageable.send`` cannot set that flag, so the message is built with the library's own
``handle_message_parameters`` and posted with its ``HTTPClient.send_message``: the same
multipart request, rate limiting and retries as every other message. Where Discord refuses a
voice message (a channel that does not allow them), the audio goes as a plain attachment.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

import discord
from discord.http import handle_message_parameters

from core.domain import Speech

log = logging.getLogger(__name__)

FILENAME = "voice-message.ogg"  # the name Discord's own clients give voice messages
FALLBACK_FILENAME = "iris-reply.ogg"


class VoiceFile(discord.File):
    """A ``discord.File`` that describes itself as a voice message's audio."""

    def __init__(self, speech: Speech) -> None:
        super().__init__(io.BytesIO(speech.ogg), filename=FILENAME)
        self.duration_secs = round(speech.seconds, 2)
        self.waveform = base64.b64encode(speech.waveform[:256]).decode()

    def to_dict(self, index: int) -> dict[str, Any]:
        return {**super().to_dict(index), "duration_secs": self.duration_secs, "waveform": self.waveform}


async def send_voice_message(source: discord.Message, speech: Speech) -> discord.Message:
    """Answer ``source`` with ``speech`` as a voice message; as an audio file where Discord refuses that."""
    channel = source.channel
    reference = source.to_reference(fail_if_not_exists=False)
    try:
        return await _post_voice_message(channel, reference, speech)
    except (discord.Forbidden, discord.HTTPException) as refused:
        if isinstance(refused, discord.HTTPException) and refused.status >= 500:
            raise
        log.info("Discord refused a voice message in %s (%s); sending an audio file", channel.id, refused.code)
    audio = discord.File(io.BytesIO(speech.ogg), filename=FALLBACK_FILENAME)
    return await channel.send(file=audio, reference=reference, mention_author=False)


async def _post_voice_message(
    channel: discord.abc.MessageableChannel, reference: discord.MessageReference, speech: Speech
) -> discord.Message:
    state = channel._state  # the connection state every discord.py model carries; send() uses it the same way
    with handle_message_parameters(
        file=VoiceFile(speech),
        flags=discord.MessageFlags(voice=True),
        message_reference=reference.to_message_reference_dict(),
        allowed_mentions=discord.AllowedMentions.none(),
        mention_author=False,
    ) as params:
        for part in params.multipart or []:
            if part.get("filename") == FILENAME:  # discord.py labels every upload application/octet-stream
                part["content_type"] = "audio/ogg"
        data = await state.http.send_message(channel.id, params=params)
    return state.create_message(channel=channel, data=data)
