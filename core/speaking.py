"""Spoken replies: whether a reply is spoken, and speaking it off the event loop.

The text reply always comes first and stays (its buttons are where rating happens); the voice
note follows it. Synthesis runs in a thread of its own, after the reply is written, so it
never holds a place at the language model.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from core.domain import IncomingMessage, Notice, NoticeKind, Person, Spoken
from core.ports import SynthesisFailed, Synthesizer, VoicePreferences
from core.speakable import speakable, trim_to_seconds

log = logging.getLogger(__name__)

SPEECH_FAILED = "(I could not say this one aloud; the text above is the whole reply.)"


class VoiceMode(enum.StrEnum):
    """``IRIS_TTS_REPLIES``: which replies are spoken for people who have not said ``/voice on|off``."""

    OFF = "off"
    MIRROR = "mirror"  # a voice note is answered with a voice note too
    ALWAYS = "always"


@dataclass(frozen=True)
class SpeechConfig:
    """Spoken replies: the ``IRIS_TTS_*`` settings, taken as they are (README: Spoken replies)."""

    replies: VoiceMode = VoiceMode.MIRROR
    # "espeak" (espeak-ng, a Debian package) or "piper" (GPL, its own environment: make piper).
    engine: Literal["espeak", "piper"] = "espeak"
    espeak_voice: str = "en-us"
    piper_python: Path = Path(".venv-piper/bin/python")
    piper_model: Path | None = None  # None: the voice `make piper` installs (en_US joe, medium)
    # Longer replies are spoken in part (whole sentences); the text reply is always complete.
    max_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    keep_audio: bool = False  # keep each spoken reply's OGG in the database with the reply


class ReplySpeaker:
    """Decides whether to speak a reply and speaks it; one synthesis at a time, in its own thread."""

    def __init__(
        self, synthesizer: Synthesizer, preferences: VoicePreferences, config: SpeechConfig | None = None
    ) -> None:
        self.synthesizer = synthesizer
        self.preferences = preferences
        self.config = config or SpeechConfig()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="speech")

    async def wanted(self, message: IncomingMessage) -> bool:
        """Whether the reply to ``message`` is spoken: the message says, else the person, else the mode."""
        if message.speak is not None:
            return message.speak
        preference = await self.preference(message.sender)
        if preference is not None:
            return preference
        mode = self.config.replies
        return mode is VoiceMode.ALWAYS or (mode is VoiceMode.MIRROR and message.audio is not None)

    async def preference(self, person: Person) -> bool | None:
        try:
            return await asyncio.to_thread(self.preferences.voice_preference, person)
        except Exception:
            log.exception("could not read a voice preference; the deployment's mode decides")
            return None

    async def set_preference(self, person: Person, on: bool | None) -> None:
        await asyncio.to_thread(self.preferences.set_voice_preference, person, on)

    async def speak(self, turn_id: int, text: str) -> Spoken | Notice | None:
        """Speak a stored reply and note how long it took; None when it has nothing to say aloud.

        A failing synthesizer gives a short ``Notice``; the text reply is untouched either way.
        """
        words = speakable(text)
        if not words:
            return None
        limit = self.config.max_seconds
        words, _ = trim_to_seconds(words, limit, self.synthesizer.words_per_second)
        began = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            speech = await loop.run_in_executor(self._thread, self.synthesizer.speak, words, limit)
        except SynthesisFailed as failed:
            log.warning("reply %s not spoken: %s", turn_id, failed)
            return Notice(NoticeKind.SPEECH_FAILED, SPEECH_FAILED, turn_id)
        except Exception:
            log.exception("reply %s not spoken", turn_id)
            return Notice(NoticeKind.SPEECH_FAILED, SPEECH_FAILED, turn_id)
        ms = (time.perf_counter() - began) * 1000
        audio = speech.ogg if self.config.keep_audio else None
        try:
            await asyncio.to_thread(self.preferences.record_speech, turn_id, speech.seconds, ms, audio)
        except Exception:
            log.exception("could not store how reply %s was spoken", turn_id)
        return Spoken(turn_id, speech, ms)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.synthesizer, "close", None)  # piper's kept process (core.piper)
        if close is not None:
            close()
