"""faster-whisper on the bundled tiny.en, on real voice notes and on what is not speech."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from core.ports import AudioError, DecodedAudio, Transcript
from core.transcription import WhisperConfig, WhisperTranscriber
from core.whisper_batch import WhisperBatcher
from core.whisper_models import TINY_EN  # the tests below were measured on tiny.en
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
    return WhisperTranscriber(WhisperConfig(model=TINY_EN, vad=False))


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
    transcriber = WhisperTranscriber(WhisperConfig(model=TINY_EN, vad=vad))
    assert words(hear(transcriber, spoken("Thank you.", tmp_path))) == ["thank", "you"]


# --- several notes at once: one CTranslate2 batch (core.whisper_batch) ---------------------------

SPOKEN = {
    "capital_of_france.ogg": "What is the capital of France?",
    "greeting.ogg": "Good morning, how are you today?",
    "short_story.ogg": "Tell me a short story about a dragon.",
}


@pytest.fixture(scope="module")
def one_at_a_time() -> WhisperTranscriber:
    """What Iris did before batching, and does with IRIS_WHISPER_BATCH=1."""
    transcriber = WhisperTranscriber(WhisperConfig(model=TINY_EN, batch=1))
    assert transcriber.batcher is None
    return transcriber


def batching(window_s: float = 5.0, **config: Any) -> tuple[WhisperTranscriber, WhisperBatcher]:
    """A batching transcriber whose worker waits long enough for every caller in flight: on a
    loaded machine the notes' VAD can finish further apart than the few ms it waits by default."""
    transcriber = WhisperTranscriber(WhisperConfig(**{"model": TINY_EN, "batch": 8, **config}))
    batcher = transcriber.batcher
    assert batcher is not None
    batcher.window_s = window_s
    return transcriber, batcher


def at_once(transcriber: WhisperTranscriber, notes: list[DecodedAudio]) -> list[Transcript]:
    with ThreadPoolExecutor(len(notes)) as pool:
        return list(pool.map(transcriber.transcribe, notes))


def test_notes_transcribed_together_are_heard_as_one_at_a_time(one_at_a_time: WhisperTranscriber) -> None:
    """Each caller gets its own note's words (all different notes), the same as alone, in batches."""
    transcriber, batcher = batching()
    files = [*SPOKEN, "greeting.mp3", "silence.ogg"]
    made = [hostile_audio.silence(4), hostile_audio.noise(3), hostile_audio.breath(0.5)]
    notes = [transcriber.decode(voice(name), LIMIT_S) for name in files]
    notes += [transcriber.decode(audio, LIMIT_S) for audio in made]
    alone = [one_at_a_time.transcribe(note) for note in notes]
    together = at_once(transcriber, [*notes, *reversed(notes)])
    assert [t.text for t in together] == [t.text for t in alone + alone[::-1]]
    assert [t.language for t in together] == [t.language for t in alone + alone[::-1]]
    for transcript, name in zip(together, SPOKEN, strict=False):
        assert words(transcript.text) == words(SPOKEN[name])
    # The VAD leaves nothing of silence, noise and breath: whisper runs on the 8 spoken notes,
    # encoded one at a time (ENCODE_BATCH) and decoded together.
    assert [kind for kind, size in batcher.sizes if kind == "encode" and size == 1] == ["encode"] * 8
    assert max(size for kind, size in batcher.sizes if kind == "generate") > 1, batcher.sizes


def test_without_the_vad_phantoms_are_dropped_in_a_batch_too(one_at_a_time: WhisperTranscriber) -> None:
    """Over noise and silence whisper falls back to higher temperatures: those calls batch apart."""
    transcriber, batcher = batching(vad=False)
    alone_without_vad = WhisperTranscriber(WhisperConfig(model=TINY_EN, vad=False, batch=1))
    made = [hostile_audio.silence(3), hostile_audio.noise(3)]
    notes = [transcriber.decode(voice("capital_of_france.ogg"), LIMIT_S)]
    notes += [transcriber.decode(audio, LIMIT_S) for audio in made]
    alone = [alone_without_vad.transcribe(note).text for note in notes]
    assert [t.text for t in at_once(transcriber, notes)] == alone
    assert alone[1:] == ["", ""]
    assert ("generate", 3) in batcher.sizes, batcher.sizes


def test_a_batch_of_one_works() -> None:
    transcriber, batcher = batching()
    transcript = transcriber.transcribe(transcriber.decode(voice("capital_of_france.ogg"), LIMIT_S))
    assert words(transcript.text) == words(SPOKEN["capital_of_france.ogg"])
    assert list(batcher.sizes) == [("encode", 1), ("generate", 1)]


def test_a_note_longer_than_whisper_s_window_goes_alone(one_at_a_time: WhisperTranscriber) -> None:
    import numpy as np

    transcriber, batcher = batching()
    said = transcriber.decode(voice("capital_of_france.ogg"), LIMIT_S).samples
    pause = np.zeros(8000, dtype=np.float32)
    samples = np.concatenate([said, pause] * 12)
    long = DecodedAudio(samples, len(samples) / 16000)
    assert long.seconds > 30
    short = [transcriber.decode(voice(name), LIMIT_S) for name in ("greeting.ogg", "short_story.ogg")]
    together = at_once(transcriber, [long, *short])
    assert sum(size for kind, size in batcher.sizes if kind == "encode") == 2  # the short ones only
    assert [t.text for t in together[1:]] == [one_at_a_time.transcribe(note).text for note in short]
    # Not compared word for word: tiny.en's twelve repeats of one question were written
    # differently by two runs of the same unbatched path (once, in a run of this file).
    assert words(together[0].text).count("capital") >= 6  # heard all along, not just once


def test_a_call_that_fails_in_a_batch_fails_alone() -> None:
    """Features of the wrong shape make the whole batch raise: the others' calls are run again.

    Encoder batches (off on the CPU, where they cost more) give each note its own encoding."""
    import ctranslate2
    import numpy as np
    from faster_whisper.audio import pad_or_trim

    transcriber, batcher = batching()
    batcher.limits["encode"] = 3
    model = transcriber.load()
    good = [
        pad_or_trim(model.feature_extractor(transcriber.decode(voice(name), LIMIT_S).samples))[None]
        for name in ("greeting.ogg", "short_story.ogg")
    ]
    bad = np.zeros((1, 81, 3000), dtype=np.float32)
    with ThreadPoolExecutor(3) as pool, batcher.caller(), batcher.caller(), batcher.caller():
        calls = [
            pool.submit(batcher.call, "encode", features, None, {}) for features in (good[0], bad, good[1])
        ]
        results = [call.exception() or call.result() for call in calls]
    assert isinstance(results[1], Exception)
    assert ("encode", 3) in batcher.sizes  # tried together first
    for features, result in zip(good, (results[0], results[2]), strict=True):
        alone = model.model.encode(ctranslate2.StorageView.from_array(features))
        assert np.array_equal(np.asarray(result), np.asarray(alone))


def test_the_batch_worker_ends_when_idle_and_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle worker thread does not hold the model for ever; the next note starts a new one."""
    import time

    from core import whisper_batch

    monkeypatch.setattr(whisper_batch, "IDLE_S", 0.2)
    transcriber, batcher = batching()
    note = transcriber.decode(voice("greeting.ogg"), LIMIT_S)
    first = transcriber.transcribe(note).text
    time.sleep(1.0)
    assert batcher._worker is None
    assert transcriber.transcribe(note).text == first
