"""Spoken replies: the engines really speak, the bundled whisper hears it back, and the service
sends the voice note after the whole text reply (or a short note when speaking fails)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from sqlalchemy import select

from bots.app import App, build_speaker
from core.domain import (
    Audio,
    ChatRef,
    IncomingMessage,
    Notice,
    NoticeKind,
    Person,
    ReplyDone,
    Speech,
    Spoken,
)
from core.ports import SynthesisFailed, Synthesizer
from core.speakable import CODE_BLOCK_SAID, speakable, trim_to_seconds
from core.speaking import ReplySpeaker, SpeechConfig, VoiceMode, sentences
from core.speech import EspeakSynthesizer, PiperSynthesizer, find_piper_voice
from core.transcription import WhisperTranscriber
from storage.tables import TurnRow
from storage.voices import SqlVoicePreferences
from tests.conftest import make_settings, voice
from tests.fakes import ScriptedGenerator

if TYPE_CHECKING:
    import numpy.typing as npt

ADA = Person("test", "ada", "Ada")
CHAT = ChatRef("test", "voice-chat")
PLAIN = [
    "The capital of France is Paris.",
    "Water boils at one hundred degrees.",
    "The cat is sleeping on the warm chair.",
]
PIPER_PYTHON = Path(__file__).parents[1] / ".venv-piper" / "bin" / "python"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["-", "-", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spelled(number: int) -> str:
    """A number under 1,000 in words, as the test sentences say it ("100" is "one hundred")."""
    if number < 20:
        return ONES[number]
    if number < 100:
        return TENS[number // 10] + (f" {ONES[number % 10]}" if number % 10 else "")
    return f"{ONES[number // 100]} hundred" + (f" {spelled(number % 100)}" if number % 100 else "")


def words(text: str) -> list[str]:
    """Lowercase words; whisper writes numbers as digits, so those are spelled out."""
    text = re.sub(r"\b\d{1,3}\b", lambda digits: spelled(int(digits.group())), text)
    return re.findall(r"[a-z]+", text.lower())


def overlap(said: str, heard: str) -> float:
    """Share of the said words that were heard (a bag of words, so order and one slip are forgiven)."""
    expected, got = words(said), words(heard)
    return sum(1 for word in expected if word in got) / len(expected)


def check_voice_note(speech: Speech) -> None:
    """Valid OGG/Opus, 48 kHz, mono, as long as it says, with a waveform Discord accepts."""
    import av

    with av.open(io.BytesIO(speech.ogg)) as container:
        assert container.format.name == "ogg"
        (stream,) = container.streams.audio
        assert stream.codec_context.name == "opus"
        assert stream.rate == 48_000 and stream.channels == 1
        assert container.duration is not None
        assert abs(container.duration / 1_000_000 - speech.seconds) < 0.1
    assert 0 < len(speech.waveform) <= 256 and max(speech.waveform) == 255


def round_trip(synthesizer: EspeakSynthesizer | PiperSynthesizer, transcriber: WhisperTranscriber) -> None:
    heard = []
    for sentence in PLAIN:
        speech = synthesizer.speak(sentence, 30)
        check_voice_note(speech)
        heard.append(transcriber.transcribe(transcriber.decode(speech.ogg, 60)).text)
    # Over all the sentences: tiny.en mishears some of espeak's robotic words, and which ones
    # depends on the CPU ("Water boils" → "walker boil" on one machine, not on another); 0.8 of
    # the words came back there. Silence or noise gets close to none.
    assert overlap(" ".join(PLAIN), " ".join(heard)) >= 0.7, heard


@needs_espeak
def test_espeak_speech_is_heard_back_by_whisper(transcriber: WhisperTranscriber) -> None:
    round_trip(EspeakSynthesizer(), transcriber)


@pytest.mark.skipif(
    not PIPER_PYTHON.exists(),
    reason="piper (GPL-3.0) is optional and lives in its own environment: run `make piper` to test it",
)
def test_piper_speech_is_heard_back_by_whisper(transcriber: WhisperTranscriber) -> None:
    model = find_piper_voice(PIPER_PYTHON)
    assert model is not None, "make piper installs the en_US joe voice"
    round_trip(PiperSynthesizer(PIPER_PYTHON, model), transcriber)


@needs_espeak
def test_a_long_reply_is_cut_at_the_limit() -> None:
    speech = EspeakSynthesizer().speak(" ".join(PLAIN * 6), 4.0)
    assert speech.truncated and speech.seconds == pytest.approx(4.0, abs=0.05)
    check_voice_note(speech)


def test_a_missing_engine_fails_with_a_short_reason(tmp_path: Path) -> None:
    with pytest.raises(SynthesisFailed, match="not installed"):
        EspeakSynthesizer(binary="no-such-espeak").speak("Hello.", 5)
    with pytest.raises(SynthesisFailed, match="make piper"):
        PiperSynthesizer(tmp_path / "python", tmp_path / "voice.onnx").speak("Hello.", 5)


def test_markdown_code_links_and_emoji_become_speakable() -> None:
    said = speakable(
        "## Paris\n"
        "The **capital** of *France* is [Paris](https://en.wikipedia.org/wiki/Paris) 🇫🇷🎉!\n"
        "- see https://www.example.com/a?b=1\n"
        "- run `ls -l`\n\n"
        "```python\nprint('hi')\n```\n"
    )
    assert said == (
        "Paris. The capital of France is Paris! see a link to example.com. run ls -l. " + CODE_BLOCK_SAID
    )
    assert speakable("👍🎉") == ""


def test_only_whole_sentences_that_fit_are_kept() -> None:
    kept = trim_to_seconds("One two three. Four five six. Seven.", 2, 3)
    assert kept == ("One two three. Four five six.", True)
    assert trim_to_seconds("One two.", 2, 3) == ("One two.", False)


# --- the service ---------------------------------------------------------------------


@dataclass(frozen=True)
class BrokenSynthesizer:
    name = "broken"
    words_per_second = 3.0

    def speak(self, text: str, max_seconds: float) -> Speech:
        raise SynthesisFailed("the engine crashed")

    def utterance(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        raise SynthesisFailed("the engine crashed")


def spoken_app(app: App, tmp_path: Path, served_gguf: Path, **settings: object) -> App:
    """``app`` with spoken replies set up as its settings (and these overrides) say."""
    app.service.replies.speaker = build_speaker(make_settings(tmp_path, served_gguf, **settings), app.store)
    return app


async def collect(app: App, message: IncomingMessage) -> list[object]:
    return [event async for event in app.service.replies.handle(message)]


@needs_espeak
async def test_mirror_speaks_after_a_voice_note_and_stores_the_timings(
    app: App, tmp_path: Path, served_gguf: Path
) -> None:
    spoken_app(app, tmp_path, served_gguf, tts_replies="mirror", tts_keep_audio=True)
    note = IncomingMessage(CHAT, ADA, audio=Audio(voice("capital_of_france.ogg"), "audio/ogg"), message_id="v1")
    events = await collect(app, note)
    done = next(e for e in events if isinstance(e, ReplyDone))
    assert isinstance(events[-1], Spoken) and events.index(done) < len(events) - 1  # the text first
    check_voice_note(events[-1].speech)
    turn = app.store.get_turn(done.turn_id)
    assert turn is not None and turn.timings.spoken_seconds == pytest.approx(events[-1].speech.seconds)
    assert turn.timings.speak_ms is not None and turn.timings.speak_ms > 0
    with app.store.engine.connect() as connection:
        kept = connection.scalar(select(TurnRow.spoken_audio).where(TurnRow.id == done.turn_id))
    assert kept == events[-1].speech.ogg

    text = await collect(app, IncomingMessage(CHAT, ADA, text="Hello there!", message_id="t1"))
    assert any(isinstance(e, ReplyDone) for e in text) and not any(isinstance(e, Spoken) for e in text)


@needs_espeak
async def test_voice_on_and_off_override_the_mode_and_forget_deletes_the_choice(
    app: App, tmp_path: Path, served_gguf: Path
) -> None:
    spoken_app(app, tmp_path, served_gguf, tts_replies="off")
    assert await app.service.replies.set_voice(ADA, True)
    events = await collect(app, IncomingMessage(CHAT, ADA, text="Hello there!", message_id="t1"))
    assert isinstance(events[-1], Spoken)
    await app.service.replies.set_voice(ADA, False)
    events = await collect(app, IncomingMessage(CHAT, ADA, text="Hello again!", message_id="t2"))
    assert not any(isinstance(e, Spoken) for e in events)

    await app.service.privacy.forget(ADA)
    assert app.service.speaker is not None and await app.service.speaker.preference(ADA) is None


async def test_a_failing_synthesizer_leaves_the_text_reply_with_a_short_note(
    app: App, tmp_path: Path, served_gguf: Path
) -> None:
    spoken_app(app, tmp_path, served_gguf, tts_replies="always")
    assert app.service.speaker is not None
    app.service.speaker.synthesizer = BrokenSynthesizer()
    question = IncomingMessage(CHAT, ADA, text="What is the capital of France?", message_id="t1")
    events = await collect(app, question)
    done = next(e for e in events if isinstance(e, ReplyDone))
    note = events[-1]
    assert isinstance(note, Notice) and note.kind is NoticeKind.SPEECH_FAILED
    assert len(note.text) < 100 and "Traceback" not in note.text
    stored = app.store.get_turn(done.turn_id)
    assert stored is not None and stored.text == done.text and stored.error is None


# --- sentences said while the reply is written (core.speaking.EarlySpeech) ---------------

RATE = 16_000
STORY = "The lighthouse keeper woke early. She climbed all the stairs. The lamp was still warm. Then she slept."


class CountingSynthesizer:
    """Says each sentence as a tone of 0.1 s per word, and notes what it said and when."""

    name = "counting"
    words_per_second = 3.0

    def __init__(self) -> None:
        self.said: list[tuple[float, str]] = []

    def speak(self, text: str, max_seconds: float) -> Speech:
        raise AssertionError("a reply is said sentence by sentence")

    def utterance(self, text: str) -> tuple[int, npt.NDArray[np.int16]]:
        self.said.append((time.monotonic(), text))
        samples = int(0.1 * RATE) * len(text.split())
        return RATE, (np.sin(np.arange(samples) / 5) * 8000).astype(np.int16)


def always(app: App, synthesizer: Synthesizer, early: bool = True) -> ReplySpeaker:
    """A speaker that says every reply with ``synthesizer``."""
    config = SpeechConfig(replies=VoiceMode.ALWAYS, early=early)
    return ReplySpeaker(synthesizer, SqlVoicePreferences(app.store.engine), config)


@pytest.mark.parametrize("early", [True, False])
async def test_a_replys_sentences_are_said_while_it_is_written_each_once(
    app: App, tmp_path: Path, served_gguf: Path, early: bool
) -> None:
    synthesizer = CountingSynthesizer()
    app.service.replies.speaker = always(app, synthesizer, early)
    app.service.writer.generator = ScriptedGenerator(STORY, pieces=8, pause_s=0.15)
    events: list[object] = []
    done_at = 0.0
    async for event in app.service.replies.handle(IncomingMessage(CHAT, ADA, text="A story?", message_id="s")):
        events.append(event)
        done_at = time.monotonic() if isinstance(event, ReplyDone) else done_at
    spoken = events[-1]
    assert isinstance(spoken, Spoken)
    said = [text for _, text in synthesizer.said]
    assert sorted(said) == sorted(sentences(STORY))  # every sentence, each once
    before = [text for at, text in synthesizer.said if at < done_at]
    if early:  # all but the last were said before the text was complete
        assert before == sentences(STORY)[:-1]
    else:
        assert before == []
    # The voice note is the sentences joined in order: 0.1 s a word (the Opus encoder pads a little).
    assert spoken.speech.seconds == pytest.approx(0.1 * len(STORY.split()), abs=0.05)


async def test_a_sentence_said_early_that_the_final_text_lacks_is_left_out(
    app: App, tmp_path: Path, served_gguf: Path
) -> None:
    """A link still open reads otherwise once closed: what the final text says is what is heard."""
    synthesizer = CountingSynthesizer()
    speaker = always(app, synthesizer)
    early = speaker.early()
    assert early is not None
    early.feed("Read [the guide. It is short](https://exa")  # the link is not closed yet
    final = "Read [the guide. It is short](https://example.org/guide). Then ask me."
    spoken = await speaker.speak(1, final, early)
    assert isinstance(spoken, Spoken)
    heard = sentences(speakable(final))
    assert heard == ["Read the guide.", "It is short.", "Then ask me."]
    assert spoken.speech.seconds == pytest.approx(0.1 * sum(len(s.split()) for s in heard), abs=0.05)


async def test_a_reply_far_over_the_time_limit_says_nothing_beyond_it_early(app: App) -> None:
    """A model that rambles (400 sentences, fed a character at a time): the speech thread gets
    only what the time limit allows, each sentence once, and the note stops at the limit."""
    synthesizer = CountingSynthesizer()
    config = SpeechConfig(replies=VoiceMode.ALWAYS, max_seconds=3.0)  # 3 words a second: 9 words
    speaker = ReplySpeaker(synthesizer, SqlVoicePreferences(app.store.engine), config)
    text = " ".join(f"Line {n} is here." for n in range(400))
    early = speaker.early()
    assert early is not None
    for end in range(1, len(text) + 1):
        early.feed(text[:end])
    spoken = await speaker.speak(1, text, early)
    assert isinstance(spoken, Spoken)
    said = [sentence for _, sentence in synthesizer.said]
    assert said == ["Line 0 is here.", "Line 1 is here."]  # 8 words; a third would pass 9
    assert spoken.speech.seconds == pytest.approx(0.8, abs=0.05)


async def test_a_failing_synthesizer_said_early_still_leaves_the_text_with_a_short_note(
    app: App, tmp_path: Path, served_gguf: Path
) -> None:
    app.service.replies.speaker = always(app, BrokenSynthesizer())
    app.service.writer.generator = ScriptedGenerator(STORY, pieces=8, pause_s=0.05)
    events = await collect(app, IncomingMessage(CHAT, ADA, text="A story?", message_id="s"))
    done = next(e for e in events if isinstance(e, ReplyDone))
    assert done.text == STORY
    note = events[-1]
    assert isinstance(note, Notice) and note.kind is NoticeKind.SPEECH_FAILED


# --- piper kept running (core.piper) ---------------------------------------------------

needs_piper = pytest.mark.skipif(
    not PIPER_PYTHON.exists(),
    reason="piper (GPL-3.0) is optional and lives in its own environment: run `make piper` to test it",
)


def piper(keep_running: bool = True) -> PiperSynthesizer:
    model = find_piper_voice(PIPER_PYTHON)
    assert model is not None, "make piper installs the en_US joe voice"
    return PiperSynthesizer(PIPER_PYTHON, model, keep_running=keep_running)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@needs_piper
def test_piper_keeps_one_process_and_replaces_a_killed_one() -> None:
    synthesizer = piper()
    try:
        check_voice_note(synthesizer.speak(PLAIN[0], 30))
        first = synthesizer.kept.pid
        check_voice_note(synthesizer.speak(PLAIN[1], 30))
        assert first is not None and synthesizer.kept.pid == first and synthesizer.kept.starts == 1

        os.kill(first, signal.SIGKILL)  # between two replies, as the OOM killer would
        check_voice_note(synthesizer.speak(PLAIN[2], 30))
        second = synthesizer.kept.pid
        assert second not in (None, first) and synthesizer.kept.starts == 2
    finally:
        synthesizer.close()
    assert synthesizer.kept.pid is None and second is not None and gone(second)


@needs_piper
def test_the_kept_piper_says_as_much_as_a_process_per_reply() -> None:
    """Same text, same voice: the same length within 5 % (piper's noise varies it a little)."""
    kept, fresh = piper(), piper(keep_running=False)
    text = " ".join(PLAIN)
    try:
        kept_s = [kept.speak(text, 60).seconds for _ in range(2)]
        fresh_s = [fresh.speak(text, 60).seconds for _ in range(2)]
    finally:
        kept.close()
    assert sum(kept_s) == pytest.approx(sum(fresh_s), rel=0.05)
    assert kept.kept.starts == 1 and fresh.kept.starts == 0


@needs_piper
def test_piper_replies_from_several_threads_each_get_their_own_audio() -> None:
    """One utterance at a time per process: a short and a long reply asked at once stay apart."""
    synthesizer = piper()
    try:
        with ThreadPoolExecutor(2) as pool:
            short, long = pool.map(lambda text: synthesizer.speak(text, 60), ["Yes.", " ".join(PLAIN)])
    finally:
        synthesizer.close()
    assert short.seconds < 2.0 < 4 * short.seconds < long.seconds
    assert synthesizer.kept.starts == 1


@needs_piper
def test_closing_the_speaker_ends_the_kept_piper() -> None:
    synthesizer = piper()
    speaker = ReplySpeaker(synthesizer, preferences=None)  # type: ignore[arg-type]  # not asked here
    synthesizer.speak("Hello.", 10)
    pid = synthesizer.kept.pid
    assert pid is not None
    speaker.close()
    assert gone(pid)
