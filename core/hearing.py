"""Hearing a voice note: decoded by its real length, charged, transcribed, its transcript stored.

Notes wait for the transcriber in a round-robin line per person (``ServiceConfig.parallel_transcripts``
at once, which the transcriber decodes as one batch). Decoding and transcribing run on the
listener's own threads, one per note heard at once: a batch of notes waiting for whisper never
holds the event loop's default threads, which every database call (and a press, a /help) needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from core.domain import Notice, NoticeKind, Person, UserTurnReceipt
from core.drafting import Stalled
from core.i18n import _
from core.languages import Detected, normalized
from core.limits import RateLimiter
from core.ports import (
    AudioError,
    AudioTooLong,
    ConversationStore,
    DecodedAudio,
    ServerUnavailable,
    Transcriber,
    Transcript,
)
from core.scheduling import FairQueue
from core.writing import mark_failed

log = logging.getLogger(__name__)

T = TypeVar("T")


class Listener:
    """Turns a stored voice turn's audio into its transcript, or the notice that says why not."""

    def __init__(
        self,
        store: ConversationStore,
        transcriber: Transcriber,
        limiter: RateLimiter,
        max_audio_seconds: float,
        parallel: int = 1,
        stall_s: float = 300.0,
    ) -> None:
        self.store = store
        self.transcriber = transcriber
        self.limiter = limiter
        self.max_audio_seconds = max_audio_seconds
        self.queue = FairQueue(parallel)
        self._threads = ThreadPoolExecutor(parallel, thread_name_prefix="whisper")
        self.stall_s = stall_s  # a decode or transcription that takes longer is given up on

    async def hear(
        self,
        receipt: UserTurnReceipt,
        sender: Person,
        audio: bytes,
        charged: bool = False,
        language: str | None = None,
    ) -> Heard | Notice:
        """``language``: the one to ask the transcriber for (the person's /language); None: it detects."""
        turn_id = receipt.turn_id
        limit = self.max_audio_seconds
        try:
            async with self.queue.slot(sender.actor):
                began = time.perf_counter()
                # Decoded once, by its real length (stopped at the limit, whatever the header claims):
                # that length, not the claimed one, is what the voice minutes are charged.
                decoded = await self._run(self.transcriber.decode, audio, limit)
                # ``charged``: a note taken over from a process killed after charging it is neither
                # charged again nor refused for that charge (the person would lose its reply to a crash).
                take = self.limiter.take_voice
                refused = None if charged else await asyncio.to_thread(take, sender, decoded.seconds)
                if refused is not None:
                    text = refused.text(self.limiter.clock())
                    await mark_failed(self.store, turn_id, text, decoded.seconds)
                    return Notice(NoticeKind.RATE_LIMITED, text, turn_id)
                transcript = await self._run(self._transcribe, decoded, language)
                ms = (time.perf_counter() - began) * 1000
        except AudioTooLong as too_long:
            text = _("That voice note is too long: I can take up to {seconds} s.").format(
                seconds=f"{limit:.0f}"
            )
            await mark_failed(self.store, turn_id, text, too_long.seconds)
            return Notice(NoticeKind.TOO_LONG, text, turn_id)
        except AudioError as bad:
            text = _(
                "I could not read that audio ({why}). Voice notes, MP3, M4A, OGG and WAV files work."
            ).format(why=bad)
            await mark_failed(self.store, turn_id, text)
            return Notice(NoticeKind.UNREADABLE_AUDIO, text, turn_id)
        except ServerUnavailable as down:
            log.warning("turn %s not transcribed: %s", turn_id, down)
            text = _("I cannot listen right now ({why}). Please send it again in a minute.").format(why=down)
            await mark_failed(self.store, turn_id, text)
            return Notice(NoticeKind.MODEL_FAILED, text, turn_id)
        except Stalled as stalled:
            log.error("turn %s not transcribed: %s", turn_id, stalled)
            text = _("Sorry, I could not finish listening to that. Please try again in a minute.")
            await mark_failed(self.store, turn_id, text)
            return Notice(NoticeKind.MODEL_FAILED, text, turn_id)
        except Exception:
            log.exception("transcription failed for turn %s", turn_id)
            text = _("Sorry, something went wrong while I listened to that. Please try again.")
            await mark_failed(self.store, turn_id, text)
            return Notice(NoticeKind.MODEL_FAILED, text, turn_id)
        if not transcript.text.strip():
            text = _("I didn't hear any speech in that recording.")
            await mark_failed(self.store, turn_id, text, transcript.audio_seconds)
            return Notice(NoticeKind.NOTHING_HEARD, text, turn_id)
        try:
            await asyncio.to_thread(
                self.store.set_transcript, turn_id, transcript.text, transcript.audio_seconds, ms
            )
        except Exception:
            log.exception("could not store the transcript of turn %s", turn_id)
        code = normalized(transcript.language)
        detected = Detected(code, transcript.language_probability) if code else None
        return Heard(transcript.text.strip(), transcript.audio_seconds, ms, detected)

    def _transcribe(self, audio: DecodedAudio, language: str | None) -> Transcript:
        if language is None:  # a transcriber that takes no language is asked as before
            return self.transcriber.transcribe(audio)
        return self.transcriber.transcribe(audio, language=language)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        """``work`` on the whisper threads; ``Stalled`` past the stall limit (the thread is left to
        finish on its own: a stuck one cannot be stopped, but the person and the queue go on)."""
        running = asyncio.get_running_loop().run_in_executor(self._threads, work, *args)
        try:
            return await asyncio.wait_for(running, self.stall_s)
        except TimeoutError:
            raise Stalled(f"{getattr(work, '__name__', 'whisper')} took over {self.stall_s:g} s") from None


@dataclass(frozen=True)
class Heard:
    """A transcript, the note's length and how long hearing it took."""

    text: str
    seconds: float
    ms: float
    language: Detected | None = None  # what the transcriber said it heard (core.languages)
