"""faster-whisper's ``WhisperModel``, encoding a note's first window once when it detects the language.

faster-whisper 1.2.1's ``transcribe`` runs whisper's encoder twice over the first 30-second
window of a note whose language it is to detect: ``detect_language`` encodes the window and
keeps only the language, then ``generate_segments`` encodes the same window again to decode it
(it takes an ``encoder_output`` argument for this, but ``transcribe`` always passes None).
The encoder always reads a whole 30-second window, so it is most of a voice note's cost: with
whisper ``base`` on 2 cores, 0.42 s a pass, two passes of a 2.5 s note's 1.1 s. Here the language
is detected from the encoder output of the window that is then decoded, and that output is
handed to ``generate_segments``: one pass, the same words (bench/languages.py: whisper base's
10 s note 2.06 s -> 1.23 s, a 2.5 s note 1.17-1.79 s -> 0.76-1.04 s, measured side by side on
these 2 cores at load 1.8-2.6; every note's words unchanged). A note of which the VAD left
nothing is not encoded at all: there is nothing to detect a language in, nor to decode.

Only ``detect_language`` and ``generate_segments`` change, in the way ``transcribe`` calls them;
everything else (VAD, features, prompt, temperature fallback, the no-speech check, the segments)
is faster-whisper's own code. This module imports ``faster_whisper`` (heavy): it is imported
where the model is loaded (``core.transcription``), never at start-up.
"""

from __future__ import annotations

import threading
from typing import Any

from faster_whisper import WhisperModel as FasterWhisperModel
from faster_whisper.audio import pad_or_trim


class WhisperModel(FasterWhisperModel):  # type: ignore[misc]  # faster_whisper ships no types
    """``faster_whisper.WhisperModel`` whose ``transcribe`` encodes the first window once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The first window's features and encoder output, from detect_language to generate_segments:
        # one per thread, as several threads transcribe with one model.
        self._first_window = threading.local()

    def transcribe(self, audio: Any, *args: Any, **kwargs: Any) -> Any:
        self._first_window.encoded = None
        try:
            return super().transcribe(audio, *args, **kwargs)
        finally:
            self._first_window.encoded = None  # generate_segments has taken it, or never will

    def detect_language(
        self,
        audio: Any = None,
        features: Any = None,
        vad_filter: bool = False,
        vad_parameters: Any = None,
        language_detection_segments: int = 1,
        language_detection_threshold: float = 0.5,
    ) -> tuple[str, float, list[tuple[str, float]]]:
        if audio is not None or features is None or language_detection_segments != 1:
            return super().detect_language(  # type: ignore[no-any-return]
                audio,
                features,
                vad_filter,
                vad_parameters,
                language_detection_segments,
                language_detection_threshold,
            )
        # The window exactly as generate_segments encodes it at seek 0: the feature extractor's
        # last frame is not content (faster-whisper's ``content_frames``), and the rest is padded.
        content_frames = features.shape[-1] - 1
        if content_frames <= 0:
            # Nothing left to hear (the VAD took it all: noise, music, a breath): no window will be
            # decoded, so none is encoded (faster-whisper's pass says "en" at 0.63 for an empty
            # window). Its tokenizer still needs a language code: English, at probability 0.
            return "en", 0.0, []
        window = features[..., : min(content_frames, self.feature_extractor.nb_max_frames)]
        encoder_output = self.encode(pad_or_trim(window))
        self._first_window.encoded = (features, encoder_output)
        # Every language with its probability, the most likely first ("<|de|>" read as "de"),
        # as faster-whisper reports them; one window, so no vote between windows.
        detected = self.model.detect_language(encoder_output)[0]
        scores = [(token[2:-2], probability) for token, probability in detected]
        language, probability = scores[0]
        return language, probability, scores

    def generate_segments(
        self, features: Any, tokenizer: Any, options: Any, log_progress: bool, encoder_output: Any = None
    ) -> Any:
        encoded = getattr(self._first_window, "encoded", None)
        self._first_window.encoded = None
        if encoder_output is None and encoded is not None and _same_array(encoded[0], features):
            encoder_output = encoded[1]  # used for the window at seek 0 only, as faster-whisper does
        return super().generate_segments(features, tokenizer, options, log_progress, encoder_output)


def _same_array(a: Any, b: Any) -> bool:
    """Whether two arrays are views of the same elements (``transcribe`` passes ``features[..., 0:]``)."""
    return bool(a.shape == b.shape and a.strides == b.strides and a.ctypes.data == b.ctypes.data)
