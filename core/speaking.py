"""Spoken replies: whether a reply is spoken, and speaking it off the event loop.

The text reply always comes first and stays (its buttons are where rating happens); the voice
note follows it. Synthesis runs in a thread of its own, so it never holds a place at the
language model. Each sentence is said as soon as the model has finished writing it
(``EarlySpeech``), so when the text is complete most of its voice note is already said: what
is left is the last sentence and the encoding.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Protocol, runtime_checkable

from pydantic import Field

from core.domain import IncomingMessage, Notice, NoticeKind, Person, Speech, Spoken
from core.i18n import _
from core.languages import LanguageDetector, asked, name
from core.ports import SynthesisFailed, Synthesizer, VoicePreferences
from core.speakable import SENTENCE_END, speakable, trim_to_seconds
from core.speech import UnknownVoice, encode_speech
from core.voice_languages import spoken_by, voice_for

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from core.personas import Persona

log = logging.getLogger(__name__)

SPEECH_FAILED = "(I could not say this one aloud; the text above is the whole reply.)"


def no_voice(language: str) -> str:
    """The note a reply in a language no voice speaks gets instead of its voice note (issue #28)."""
    return _("(I have no voice for {language}, so this reply is text only.)").format(language=name(language))


MAX_VOICES = 64  # personas' voices remembered (a synthesizer each, or why there is none)


@runtime_checkable
class Voiced(Protocol):
    """A synthesizer that speaks in other voices too (``core.speech``): a persona's voice."""

    def voiced(self, voice: str) -> Synthesizer:
        """The synthesizer in ``voice``; ``UnknownVoice`` when it has none of that name (blocking)."""
        ...


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
    # Say each sentence while the rest of the reply is being written (off: all of it once written).
    early: bool = True


class ReplySpeaker:
    """Decides whether to speak a reply and speaks it; one synthesis at a time, in its own thread."""

    def __init__(
        self, synthesizer: Synthesizer, preferences: VoicePreferences, config: SpeechConfig | None = None
    ) -> None:
        self.synthesizer = synthesizer
        self.preferences = preferences
        self.config = config or SpeechConfig()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="speech")
        # Personas' voices: each one's synthesizer, or why it has none (for the synthesizer in ``_of``).
        self._voices: dict[str, Synthesizer | str] = {}
        self._of: Synthesizer | None = None
        self._voices_lock = threading.Lock()
        self._warned: set[tuple[str | None, int, str]] = set()

    async def wanted(self, message: IncomingMessage, chat_mode: VoiceMode | None = None) -> bool:
        """Whether the reply to ``message`` is spoken: the message says, else the chat's setting
        (``/settings``, ``core.chat_settings``), else the person's ``/voice``, else the mode."""
        if message.speak is not None:
            return message.speak
        if chat_mode is None:
            preference = await self.preference(message.sender)
            if preference is not None:
                return preference
        mode = chat_mode or self.config.replies
        return mode is VoiceMode.ALWAYS or (mode is VoiceMode.MIRROR and message.audio is not None)

    async def preference(self, person: Person) -> bool | None:
        try:
            return await asyncio.to_thread(self.preferences.voice_preference, person)
        except Exception:
            log.exception("could not read a voice preference; the deployment's mode decides")
            return None

    async def set_preference(self, person: Person, on: bool | None) -> None:
        await asyncio.to_thread(self.preferences.set_voice_preference, person, on)

    async def voice(self, persona: Persona | None) -> Synthesizer:
        """The synthesizer that says a reply of ``persona``: in the persona's voice when the synthesizer
        has it, else the deployment's (``IRIS_TTS_*``), with a warning once per persona version and voice."""
        if persona is None or not persona.voice:
            return self.synthesizer
        found = await asyncio.to_thread(self._voiced, persona.voice)
        if isinstance(found, str):
            key = (persona.name, persona.version, persona.voice)
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "persona %s (version %s): voice %r not used (%s); the deployment's voice says its replies",
                    persona.name,
                    persona.version,
                    persona.voice,
                    found,
                )
            return self.synthesizer
        return found

    def voice_problem(self, voice: str) -> str | None:
        """Why the synthesizer cannot say ``voice`` (one line); None: it can, or cannot tell (blocking)."""
        if not isinstance(self.synthesizer, Voiced):
            return None
        try:
            self.synthesizer.voiced(voice)
        except UnknownVoice as unknown:
            return str(unknown)
        except SynthesisFailed:  # not installed here, say: nothing to check against
            return None
        except Exception:
            log.warning("could not check voice %r", voice, exc_info=True)
        return None

    def _voiced(self, voice: str) -> Synthesizer | str:
        """The synthesizer in ``voice``, or why there is none; asked once per voice (blocking)."""
        with self._voices_lock:
            if self._of is not self.synthesizer:  # the synthesizer was replaced: forget the old one's voices
                self._close_voices()
                self._of = self.synthesizer
            if voice in self._voices:
                return self._voices[voice]
        found: Synthesizer | str
        if not isinstance(self.synthesizer, Voiced):
            found = f"{self.synthesizer.name} speaks in one voice only"
        else:
            try:
                found = self.synthesizer.voiced(voice)
            except Exception as error:  # not installed, unreadable: the deployment's voice says it
                found = str(error) if isinstance(error, SynthesisFailed) else type(error).__name__
        with self._voices_lock:
            if len(self._voices) >= MAX_VOICES:
                self._close_voices()
            return self._voices.setdefault(voice, found)

    def _close_voices(self) -> None:
        for synthesizer in self._voices.values():
            close = getattr(synthesizer, "close", None)  # a piper voice's kept process
            if close is not None and synthesizer is not self.synthesizer:
                close()
        self._voices.clear()

    async def in_language(self, voice: Synthesizer, language: str | None) -> Synthesizer | None:
        """A voice that says ``language``: ``voice`` when it does (or no language is given), else the
        deployment's when it does, else another voice of it (``core.voice_languages``); None: none does."""
        if language is None:
            return voice
        for candidate in (voice, self.synthesizer):
            if language in (spoken_by(candidate) or {language}):
                return candidate
        try:
            return await asyncio.to_thread(voice_for, voice, language)
        except Exception:
            log.warning("could not find a voice for %r", language, exc_info=True)
            return None

    def early(
        self, voice: Synthesizer | None = None, detector: LanguageDetector | None = None
    ) -> EarlySpeech | None:
        """Where a reply being written hands its text, to say its sentences (in ``voice``, by default
        the deployment's) as they are finished."""
        return EarlySpeech(self, voice or self.synthesizer, detector) if self.config.early else None

    async def speak(
        self,
        turn_id: int,
        text: str,
        early: EarlySpeech | None = None,
        voice: Synthesizer | None = None,
        language: str | None = None,
    ) -> Spoken | Notice | None:
        """Speak a stored reply (in ``voice``, by default the deployment's) and note how long it took;
        None when it has nothing to say aloud.

        ``language``: the reply's; a voice that does not speak it never says it (``in_language``),
        and without one the person gets a short ``Notice`` instead of the voice note. Sentences
        ``early`` already said in the voice kept are not said again. A failing synthesizer gives a
        short ``Notice``; the text reply is untouched either way.
        """
        words = speakable(text)
        if not words:
            return None
        voice = voice or (early.voice if early is not None else self.synthesizer)
        chosen = await self.in_language(voice, language)
        if chosen is not voice and early is not None:  # its sentences were said in another language's voice
            early.cancel()
            early = None
        if chosen is None:
            return Notice(NoticeKind.SPEECH_FAILED, no_voice(language or ""), turn_id)
        voice = chosen
        limit = self.config.max_seconds
        words, _ = trim_to_seconds(words, limit, voice.words_per_second)
        began = time.perf_counter()
        try:
            speech = await self._say(sentences(words), limit, early, voice)
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

    def say_soon(
        self, sentence: str, voice: Synthesizer | None = None
    ) -> Future[tuple[int, npt.NDArray[np.int16]]]:
        """Say ``sentence`` in the speech thread, after what it is saying now."""
        return self._thread.submit((voice or self.synthesizer).utterance, sentence)

    async def _say(
        self, said: list[str], limit: float, early: EarlySpeech | None, voice: Synthesizer
    ) -> Speech:
        """Each sentence's samples (said early, or now, in order), joined and encoded once."""
        loop = asyncio.get_running_loop()
        parts: list[tuple[int, npt.NDArray[np.int16]]] = []
        for sentence in said:
            ahead = early.take(sentence) if early is not None else None
            said_now = ahead if ahead is not None else self.say_soon(sentence, voice)
            parts.append(await asyncio.wrap_future(said_now))
        if early is not None:
            early.cancel()  # sentences the final text no longer has
        return await loop.run_in_executor(self._thread, join_and_encode, parts, limit)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        with self._voices_lock:
            self._close_voices()
        close = getattr(self.synthesizer, "close", None)  # piper's kept process (core.piper)
        if close is not None:
            close()


class EarlySpeech:
    """A reply's finished sentences, said while the model writes the rest (one per reply being spoken).

    ``feed`` gets the reply's text as it grows; every sentence followed by another is finished
    and goes to the speech thread at once. The voice note is made of the final text's sentences
    (``ReplySpeaker.speak``): one said early is used when the final text has it word for word
    (a sentence whose markup was still open, a link or a code block, may read otherwise once
    closed, and is then said again).
    """

    def __init__(
        self, speaker: ReplySpeaker, voice: Synthesizer | None = None, detector: LanguageDetector | None = None
    ) -> None:
        # A reply being written in a language the voice does not speak is not said early.
        self._detector = detector
        self._speaker = speaker
        self.voice = voice or speaker.synthesizer  # every sentence of a reply in one voice
        self._ahead: dict[str, Future[tuple[int, npt.NDArray[np.int16]]]] = {}
        self._words = 0.0  # how many words were sent to be said: none beyond the time limit
        self._finished = 0  # sentence ends followed by more text, when last looked
        self._full = False  # the time limit is reached: nothing more is said early

    def feed(self, text: str) -> None:
        """Say the sentences of ``text`` finished since the last call (on the event loop: cheap
        when no sentence was finished since, and nothing once the time limit is reached)."""
        finished = len(_FINISHED.findall(text))
        if self._full or finished == self._finished:
            return
        self._finished = finished
        if not self._in_voice(text):
            self._full = True  # ReplySpeaker.speak picks the voice of the reply's language, or none
            return
        speaker = self._speaker
        budget = speaker.config.max_seconds * self.voice.words_per_second
        for sentence in sentences(speakable(text))[:-1]:  # the last one may still grow
            if sentence in self._ahead:
                continue
            self._words += len(sentence.split())
            if self._words > budget:
                self._full = True
                return
            self._ahead[sentence] = speaker.say_soon(sentence, self.voice)

    def _in_voice(self, text: str) -> bool:
        """Whether the voice speaks the language ``text`` is in, when the detector is sure of it."""
        if self._detector is None:
            return True
        try:
            code = asked(None, self._detector.detect(text))  # a fraction of a ms: on the event loop
        except Exception:
            log.warning("could not detect a reply's language; its sentences are said early", exc_info=True)
            return True
        return code is None or code in (spoken_by(self.voice) or {code})

    def take(self, sentence: str) -> Future[tuple[int, npt.NDArray[np.int16]]] | None:
        return self._ahead.pop(sentence, None)

    def cancel(self) -> None:
        """Drop what is not said yet (the reply failed, or its final text lacks it)."""
        for ahead in self._ahead.values():
            ahead.cancel()
        self._ahead.clear()


# A sentence end with more text after it: a finished sentence (speakable() also ends one at each
# line). Only a cheap trigger: a sentence it misses is said with the rest once the reply is written.
_FINISHED = re.compile(r"[.!?…]\s+\S|\n\s*\S")


def sentences(words: str) -> list[str]:
    """Speakable words split where they would be said as separate sentences."""
    return [sentence for sentence in SENTENCE_END.split(words.strip()) if sentence]


def join_and_encode(parts: list[tuple[int, npt.NDArray[np.int16]]], max_seconds: float) -> Speech:
    """One voice note of utterances said one after another (all at one rate: one voice)."""
    import numpy as np

    rates = {rate for rate, _ in parts}
    if len(rates) != 1:
        raise SynthesisFailed(f"the utterances differ in sample rate ({sorted(rates)})")
    return encode_speech(np.concatenate([pcm for _, pcm in parts]), rates.pop(), max_seconds)
