"""faster-whisper on the bundled tiny.en, on real voice notes and on what is not speech."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from core.ports import AudioError
from core.transcription import WhisperConfig, WhisperTranscriber
from tests import hostile_audio
from tests.conftest import voice

LIMIT_S = 300.0


def hear(transcriber: WhisperTranscriber, audio: bytes) -> str:
    return transcriber.transcribe(transcriber.decode(audio, LIMIT_S)).text


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_a_voice_note_is_transcribed_to_what_was_said(transcriber: WhisperTranscriber) -> None:
    transcript = transcriber.transcribe(transcriber.decode(voice("capital_of_france.ogg"), LIMIT_S))
    assert words(transcript.text) == words("What is the capital of France?")
    assert transcript.language == "en"
    assert 1.0 < transcript.audio_seconds < 4.0


@pytest.mark.parametrize("name", ["greeting.ogg", "greeting.mp3", "greeting.m4a", "greeting.wav"])
def test_common_formats_are_understood(transcriber: WhisperTranscriber, name: str) -> None:
    decoded = transcriber.decode(voice(name), LIMIT_S)
    assert 1.0 < decoded.seconds < 4.0
    assert words(transcriber.transcribe(decoded).text) == words("Good morning, how are you today?")


def test_silence_gives_no_words(transcriber: WhisperTranscriber) -> None:
    decoded = transcriber.decode(voice("silence.ogg"), LIMIT_S)
    assert decoded.seconds == pytest.approx(3.0, abs=0.1)
    assert transcriber.transcribe(decoded).text == ""


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
        transcriber.decode(payload, LIMIT_S)
    assert str(raised.value)


def test_a_truncated_voice_note_is_refused_or_partly_heard(transcriber: WhisperTranscriber) -> None:
    """Half a file is what a dropped download leaves; it must never crash the transcriber."""
    half = voice("capital_of_france.ogg")[:3000]
    try:
        text = hear(transcriber, half)
    except AudioError:
        return
    assert set(words(text)) <= set(words("What is the capital of France?"))


# --- whisper's phantoms: what it writes over sound that is not speech ----------------------------

NOT_SPEECH: dict[str, Callable[[], bytes]] = {
    "white noise": lambda: hostile_audio.noise(3),
    "music": lambda: hostile_audio.music(10),
    "silence": lambda: hostile_audio.silence(5),
    "a breath": lambda: hostile_audio.breath(0.5),
    "a longer breath": lambda: hostile_audio.breath(1.0),
}


@pytest.fixture(scope="module")
def without_vad() -> WhisperTranscriber:
    """Whisper on every sample: the phantom filter alone, as with IRIS_WHISPER_VAD=false."""
    return WhisperTranscriber(WhisperConfig(vad=False))


@pytest.mark.parametrize("sound", NOT_SPEECH)
def test_sound_that_is_not_speech_gives_no_words(transcriber: WhisperTranscriber, sound: str) -> None:
    assert hear(transcriber, NOT_SPEECH[sound]()) == ""


@pytest.mark.parametrize("sound", NOT_SPEECH)
def test_phantoms_are_dropped_even_without_the_vad(without_vad: WhisperTranscriber, sound: str) -> None:
    """Without the VAD, tiny.en writes "Thank you." over the music and "You" over silence and breaths."""
    assert hear(without_vad, NOT_SPEECH[sound]()) == ""


def spoken(text: str, tmp_path: Path) -> bytes:
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (a Debian package)")
    wav = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True)
    return wav.read_bytes()


@pytest.mark.parametrize("vad", [True, False], ids=["vad", "no-vad"])
def test_a_phrase_whisper_imagines_is_still_heard_when_said(tmp_path: Path, vad: bool) -> None:
    transcriber = WhisperTranscriber(WhisperConfig(vad=vad))
    assert words(hear(transcriber, spoken("Thank you.", tmp_path))) == ["thank", "you"]
