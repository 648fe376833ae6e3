"""Speech to text with faster-whisper, on audio decoded by its real length.

A file's header may lie about its length (Matroska's Segment Duration is a
float anyone can rewrite; a 6 kbit/s Opus stream packs hours into a few MB), so
audio is decoded into one buffer of the limit's size and decoding stops when it
is full: the length a note is refused or charged by is the length really heard.

``faster_whisper`` and ``av`` are imported inside the functions that need
them, so importing ``core`` stays cheap.
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field, SecretStr

from core import whisper_models
from core.ports import AudioError, AudioTooLong, DecodedAudio, Transcript

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from core.whisper_batch import WhisperBatcher

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what whisper models expect
# Decoding goes this far past the limit: Opus padding and durations that platforms round to
# whole seconds should not refuse a note the person's app shows at the limit.
LENGTH_MARGIN_S = 0.5
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # whisper's window: a longer note is transcribed alone


def bundled_whisper_path() -> Path:
    """The bundled whisper ``tiny.en`` folder (English only; what ``IRIS_WHISPER_MODEL=tiny.en`` loads)."""
    return whisper_models.tiny_en_path()


@dataclass(frozen=True)
class WhisperConfig:
    """Speech to text: the ``IRIS_WHISPER_*`` settings, taken by both transcribers as they are.

    ``model`` is ``base`` (the default, bundled, 99 languages; ``bundled`` says the same),
    ``tiny.en`` (bundled, English only), a faster-whisper size name (``small``), a Hub id or a
    local path (``core.whisper_models``).
    With ``url`` set, an OpenAI-compatible server transcribes instead (``core.remote``).
    """

    model: str = whisper_models.BASE  # 99 languages; ``tiny.en`` for English only (core.whisper_models)
    language: str = "auto"  # "auto" detects; or a code such as "en"
    device: str = "cpu"
    compute_type: str = "int8"
    vad: bool = True  # skip silence with the Silero VAD before decoding
    beam_size: int = 5
    # Whisper's temperature fallback: a window whose text looks wrong (it repeats itself, or whisper
    # doubts it) is decoded again by sampling at 0.2, 0.4 ... 1.0, five candidates each. Off: it
    # held the whisper thread 10-23 s on an 8-10 s note it could not read (speech played backwards,
    # Greek), every note behind it waiting; off, 1.4-4 s, and every fixture's words the same. Always
    # on with the VAD off: it is then what keeps noise and breaths from being written as words.
    fallback: bool = False
    cpu_threads: int = 0  # 0: CTranslate2 decides
    download_root: str | None = None
    url: str | None = None  # an OpenAI /v1/audio/transcriptions server instead of the model here
    api_key: SecretStr | None = None
    served_model: str | None = None  # the name the server knows its model by; None: whisper-1
    # Notes transcribed at the same moment are decoded by whisper together, up to this many
    # (core.whisper_batch); 1: one at a time. bench/transcribe_batch.py measured 8: 1.42× for 8 notes.
    # Off (1) by default while it is new: it was first blamed for `iris run` processes that did not
    # stop on Ctrl+C, which then happened with it off too (bots/serve.py bounds the stop now).
    batch: Annotated[int, Field(ge=1, le=64)] = 1

    @property
    def language_code(self) -> str | None:
        """The language to transcribe in; None: detect it."""
        return None if self.language == "auto" else self.language


class WhisperTranscriber:
    """A faster-whisper model, loaded on first use; notes transcribed at once share its batches.

    ``transcribe`` blocks (the service calls it from worker threads): notes being transcribed at
    the same moment, each 30 s or shorter, are encoded and decoded together (core.whisper_batch).
    """

    def __init__(self, config: WhisperConfig | None = None, models_dir: Path | None = None) -> None:
        self.config = config or WhisperConfig()
        self.models_dir = models_dir  # where the bundled base model is assembled; None: the user's cache
        self._model: WhisperModel | None = None
        self._batched: tuple[WhisperModel, WhisperBatcher] | None = None
        self._load_lock = threading.Lock()

    @property
    def model_source(self) -> str:
        """The folder or name faster-whisper loads (a bundled model's folder is made ready first)."""
        return whisper_models.resolve(self.config.model, self.models_dir)

    def load(self) -> WhisperModel:
        with self._load_lock:
            if self._model is None:
                from core.whisper_model import WhisperModel  # faster-whisper's, one encoder pass a window

                source = self.model_source
                log.info("loading whisper model %s", source)
                self._model = WhisperModel(
                    source,
                    device=self.config.device,
                    compute_type=self.config.compute_type,
                    cpu_threads=self.config.cpu_threads,
                    download_root=self.config.download_root,
                )
                from core.whisper_batch import batched_model

                self._batched = batched_model(self._model, self.config.batch)
            return self._model

    @property
    def batcher(self) -> WhisperBatcher | None:
        """What batches concurrent notes (its ``sizes`` are the recent batches); None: one at a time."""
        self.load()
        return self._batched[1] if self._batched is not None else None

    def decode(self, audio: bytes, max_seconds: float) -> DecodedAudio:
        return decode(audio, max_seconds)

    @property
    def languages(self) -> frozenset[str] | None:
        """The languages the model can be asked for: English only for ``tiny.en`` and the other
        ``*.en`` models (they have no language tokens); None: any whisper language."""
        return frozenset({"en"}) if whisper_models.english_only(self.config.model) else None

    def transcribe(self, audio: DecodedAudio, language: str | None = None) -> Transcript:
        model = self.load()
        language = language or self.config.language_code
        if self._batched is None or len(audio.samples) > WINDOW_SAMPLES:
            return self._transcribe(model, audio, language)  # a longer note takes several windows: alone
        twin, batcher = self._batched
        with batcher.caller():
            return self._transcribe(twin, audio, language)

    def _transcribe(self, model: WhisperModel, audio: DecodedAudio, language: str | None) -> Transcript:
        segments, info = model.transcribe(
            audio.samples,
            language=language,
            beam_size=self.config.beam_size,
            vad_filter=self.config.vad,
            condition_on_previous_text=False,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            log_prob_threshold=LOG_PROB_THRESHOLD,
            temperature=FALLBACK_TEMPERATURES if self.config.fallback or not self.config.vad else 0.0,
            max_new_tokens=most_tokens(audio.seconds),
        )
        # The segments are computed as they are read: here, inside the batcher's caller().
        speech_s = info.duration_after_vad if self.config.vad else info.duration
        text = " ".join(heard(segments, speech_s)).strip()
        return Transcript(text, info.language, audio.seconds, info.language_probability)


FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # whisper's own
# The most text tokens whisper writes for a second of a note: its densest, 448 for a 30 s window.
# The fixtures' speech took 2.7-6.2 a second (8 languages); a window whisper cannot read is
# written until the limit, a phrase repeated over and over.
TOKENS_PER_S = 15
MAX_NEW_TOKENS = 440  # 448, less the prompt (start, language, task)


def most_tokens(seconds: float) -> int:
    """The most tokens whisper may write for each window of a note this long: what speech at
    ``TOKENS_PER_S`` holds, counted in whole 5 s steps (notes of about one length then ask the
    same of a whisper batch, so they can share it)."""
    return min(TOKENS_PER_S * 5 * max(1, math.ceil(seconds / 5)), MAX_NEW_TOKENS)


# faster-whisper drops a segment when the model thinks it holds no speech and what it wrote is
# unlikely: whisper's own defaults, named here because the phrase filter below leans on them too.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
# What whisper, trained on subtitled videos, writes over noise, music, silence and breaths.
KNOWN_PHANTOMS = frozenset(
    {
        "you",
        "thank you",
        "thank you very much",
        "thank you so much",
        "thanks for watching",
        "thank you for watching",
        "thank you so much for watching",
        "thank you for watching and see you next time",
        "thanks for watching and see you next time",
        "see you next time",
        "please subscribe",
        "like and subscribe",
        "subscribe to my channel",
        "bye",
        "bye bye",
        "the end",
        "so",
        *("oh", "ah", "uh", "um", "ugh", "huh", "hm", "hmm", "mm", "mhm"),  # breaths and clicks
    }
)
PHANTOM_PREFIXES = ("subtitles by", "subtitled by", "captions by", "transcribed by", "translated by")
# A known phrase is taken as said only over at least this much speech (after the VAD) and when
# whisper is sure of it. Measured on tiny.en: espeak's "Thank you." scored no_speech_prob 0.14 and
# avg_logprob -0.61; its phantoms over music, silence and breaths 0.49-0.94 and -0.94 to -1.16.
LITTLE_SPEECH_S = 0.5
SURE_NO_SPEECH = 0.3  # no_speech_prob under this, and ...
SURE_LOG_PROB = -0.8  # ... avg_logprob over this: whisper heard the phrase rather than imagined it
_MARKUP = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫♬]")  # [Music], (applause), *sighs*, ♪


class ScoredSegment(Protocol):
    """A piece of a transcript with whisper's scores (faster-whisper's and OpenAI's verbose JSON alike)."""

    text: str
    no_speech_prob: float
    avg_logprob: float


def heard(segments: Iterable[ScoredSegment], speech_seconds: float) -> Iterator[str]:
    """The segments' texts, without whisper's phantoms: sound markup, and known phrases over little speech."""
    for segment in segments:
        text = _MARKUP.sub(" ", segment.text).strip()
        if not text or _phantom(text, segment, speech_seconds):
            continue
        yield text


def _phantom(text: str, segment: ScoredSegment, speech_seconds: float) -> bool:
    # Whisper's own rule (both scores doubtful) at a lower no-speech bar: over a breath it wrote
    # "You", "Oh" or "Ugh!" at no_speech_prob 0.49-0.55, avg_logprob -1.08 to -1.34.
    if segment.no_speech_prob >= SURE_NO_SPEECH and segment.avg_logprob < LOG_PROB_THRESHOLD:
        return True
    words = " ".join(re.findall(r"[a-z0-9']+", text.lower()))
    known = words in KNOWN_PHANTOMS or words.startswith(PHANTOM_PREFIXES) or not words
    if not known:
        return False
    sure = segment.no_speech_prob < SURE_NO_SPEECH and segment.avg_logprob > SURE_LOG_PROB
    return speech_seconds < LITTLE_SPEECH_S or not sure


def decode(audio: bytes, max_seconds: float) -> DecodedAudio:
    """16 kHz mono float32 samples of the first audio stream, at most ``max_seconds`` (+ the margin).

    Refused at once when the header claims more; a header claiming less is not
    trusted: the samples go into one buffer of the limit's size and decoding
    stops, with ``AudioTooLong``, at the first sample that does not fit.
    Unlike ``faster_whisper.audio.decode_audio`` there is no ``gc.collect()``,
    a full collection that held the GIL and stalled the bot's event loop by
    30-55 ms per voice note here (bench/pipeline.py).
    """
    import av
    import numpy as np

    capacity = int((max_seconds + LENGTH_MARGIN_S) * SAMPLE_RATE)
    filled = 0
    try:
        with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioError("no audio in the file")
            claimed = _claimed_seconds(container, stream)
            if claimed is not None and claimed > max_seconds + LENGTH_MARGIN_S:
                raise AudioTooLong(claimed, max_seconds)
            # np.empty: pages the decoder never writes are never touched, so a short note costs its length.
            buffer = np.empty(capacity, dtype=np.float32)
            for samples in _resampled(_valid_frames(container.decode(stream))):
                if filled + len(samples) > capacity:
                    raise AudioTooLong((filled + len(samples)) / SAMPLE_RATE, max_seconds)
                buffer[filled : filled + len(samples)] = samples
                filled += len(samples)
    except av.FFmpegError as error:
        raise AudioError("the audio could not be decoded") from error
    if not filled:
        raise AudioError("the file holds no sound")
    return DecodedAudio(buffer[:filled], filled / SAMPLE_RATE)


def flac(audio: DecodedAudio) -> bytes:
    """The decoded samples as a 16 kHz mono FLAC file (lossless, about half of WAV's size)."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono", format="s16")
        step = SAMPLE_RATE * 10  # converted a piece at a time: no second full-length copy
        for start in range(0, len(audio.samples), step):
            piece = np.clip(audio.samples[start : start + step], -1.0, 1.0) * 32767
            frame = av.AudioFrame.from_ndarray(piece.astype(np.int16)[None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def _claimed_seconds(container: Any, stream: Any) -> float | None:
    """The length the container's header claims, if it claims one: cheap, and not to be trusted."""
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    return None


def _resampled(frames: Iterable[Any]) -> Iterator[Any]:
    """Each frame as 16 kHz mono float32, a few thousand samples at a time."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for frame in chain(frames, [None]):  # None flushes what the resampler holds back
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1)


def _valid_frames(frames: Iterator[Any]) -> Iterator[Any]:
    """Skip frames FFmpeg reports as damaged; a dropped packet should not lose the note."""
    import av

    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.InvalidDataError:
            continue
