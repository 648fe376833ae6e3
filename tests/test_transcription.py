"""faster-whisper on the bundled tiny.en, on real voice notes."""

from __future__ import annotations

import re

import pytest

from core.ports import AudioError
from core.transcription import WhisperTranscriber
from tests.conftest import voice


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_a_voice_note_is_transcribed_to_what_was_said(transcriber: WhisperTranscriber) -> None:
    transcript = transcriber.transcribe(voice("capital_of_france.ogg"))
    assert words(transcript.text) == words("What is the capital of France?")
    assert transcript.language == "en"
    assert 1.0 < transcript.audio_seconds < 4.0


@pytest.mark.parametrize("name", ["greeting.ogg", "greeting.mp3", "greeting.m4a", "greeting.wav"])
def test_common_formats_are_understood(transcriber: WhisperTranscriber, name: str) -> None:
    audio = voice(name)
    assert 1.0 < transcriber.probe(audio) < 4.0
    assert words(transcriber.transcribe(audio).text) == words("Good morning, how are you today?")


def test_silence_gives_no_words(transcriber: WhisperTranscriber) -> None:
    audio = voice("silence.ogg")
    assert transcriber.probe(audio) == pytest.approx(3.0, abs=0.1)
    assert transcriber.transcribe(audio).text == ""


@pytest.mark.parametrize(
    "payload",
    [
        b"this is a text file, not audio\n" * 20,
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        b"OggS" + bytes(2000),  # an Ogg header and nothing behind it
    ],
    ids=["text", "png", "broken-ogg"],
)
def test_non_audio_is_refused_with_a_reason(transcriber: WhisperTranscriber, payload: bytes) -> None:
    with pytest.raises(AudioError) as raised:
        transcriber.probe(payload)
    assert str(raised.value)
    with pytest.raises(AudioError):
        transcriber.transcribe(payload)


def test_a_truncated_voice_note_is_refused_or_partly_heard(transcriber: WhisperTranscriber) -> None:
    """Half a file is what a dropped download leaves; it must never crash the transcriber."""
    half = voice("capital_of_france.ogg")[:3000]
    try:
        transcript = transcriber.transcribe(half)
    except AudioError:
        return
    assert set(words(transcript.text)) <= set(words("What is the capital of France?"))
