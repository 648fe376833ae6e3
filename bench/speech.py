"""What does a spoken reply cost? (not a test)

    .venv/bin/python bench/speech.py [--runs 3] [--engines espeak,piper]

1. Real-time factor of synthesis (synthesis seconds / audio seconds) for about 5, 15 and 30 s of
   speech, engine by engine, side by side; each figure is the median of ``--runs``, the engines
   interleaved so that a noisy machine slows them alike. The time includes the OGG/Opus encoding,
   and for espeak-ng and "piper, a process per reply" starting the engine's process (piper loads
   its voice each time); "piper" is the process Iris keeps running between replies (core.piper),
   started before the first measurement.
2. What a spoken reply adds to the time until the person can listen: through the whole service
   (SQLite, the bundled model, ``IRIS_TTS_REPLIES=always``), the time until the text reply is
   complete and the time until its voice note is ready, for a few questions, each asked once of
   every engine in turn (the order reversed every other question; one application, its
   synthesizer swapped between messages; ``--rounds`` asks them again), each engine
   both ways: its sentences said while the reply is written (as Iris does) and the whole reply
   said once written (``IRIS_TTS_EARLY=false``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from bots.app import build_app
from bots.settings import Settings
from core.domain import ChatRef, IncomingMessage, Person, ReplyDone, Spoken
from core.speaking import SpeechConfig, VoiceMode
from core.speech import EspeakSynthesizer, PiperSynthesizer, find_piper_voice

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."  # 14 words
TARGETS_S = (5, 15, 30)
QUESTIONS = [
    "What is the capital of France?",
    "Tell me about the moon.",
    "How do plants make food?",
    "Why is the sky blue?",
]
PIPER_PYTHON = Path(".venv-piper/bin/python")
WAYS = (("", True), (", said once written", False))


def text_for(seconds: float, words_per_second: float) -> str:
    words = SENTENCE.rstrip(".").split()
    count = round(seconds * words_per_second)
    return " ".join((words * (count // len(words) + 1))[:count]) + "."


def engines(names: list[str]) -> dict[str, EspeakSynthesizer | PiperSynthesizer]:
    found: dict[str, EspeakSynthesizer | PiperSynthesizer] = {}
    if "espeak" in names:
        found["espeak-ng"] = EspeakSynthesizer()
    model = find_piper_voice(PIPER_PYTHON) if PIPER_PYTHON.exists() else None
    if "piper" in names and model is not None:
        found["piper, a process per reply"] = PiperSynthesizer(PIPER_PYTHON, model, keep_running=False)
        found["piper"] = PiperSynthesizer(PIPER_PYTHON, model)
    elif "piper" in names:
        print("piper: not installed (make piper); skipped")
    return found


def real_time_factors(runs: int, names: list[str]) -> None:
    synthesizers = engines(names)
    rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for synthesizer in synthesizers.values():  # warm the page cache, not measured
        synthesizer.speak(SENTENCE, 60)
    for _ in range(runs):
        for target in TARGETS_S:
            for name, synthesizer in synthesizers.items():
                text = text_for(target, synthesizer.words_per_second)
                began = time.perf_counter()
                speech = synthesizer.speak(text, 120)
                rows.setdefault((name, target), []).append((time.perf_counter() - began, speech.seconds))
    print(f"\nsynthesis, median of {runs} (wall seconds / audio seconds = real-time factor):")
    print(f"{'target':>7}  " + "  ".join(f"{name:>26}" for name in synthesizers))
    for target in TARGETS_S:
        cells = []
        for name in synthesizers:
            wall = statistics.median(w for w, _ in rows[(name, target)])
            audio = statistics.median(a for _, a in rows[(name, target)])
            cells.append(f"{wall:6.2f} s / {audio:5.1f} s = {wall / audio:5.3f}x")
        print(f"{target:>5} s  " + "  ".join(f"{cell:>26}" for cell in cells))
    for synthesizer in synthesizers.values():
        if isinstance(synthesizer, PiperSynthesizer):
            synthesizer.close()


async def until_listening(names: list[str], rounds: int) -> None:
    synthesizers = engines(names)
    # Each engine twice: sentences said while the reply is written (as Iris does), and the
    # whole reply said once it is written (IRIS_TTS_EARLY=false, as before).
    variants = [(f"{name}{suffix}", name, early) for name in synthesizers for suffix, early in WAYS]
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=Path(data), tts=SpeechConfig(replies=VoiceMode.ALWAYS)
        )
        app = build_app(settings)
        speaker = app.service.speaker
        assert speaker is not None
        rows: dict[str, tuple[list[float], list[float], list[float]]] = {}
        for variant, _, _ in variants:
            rows[variant] = ([], [], [])
        try:
            app.warm_up()
            for synthesizer in synthesizers.values():
                synthesizer.speak(SENTENCE, 60)  # the kept piper starts here, as after a first reply
            for number, question in enumerate(QUESTIONS * rounds):
                for variant, name, early in variants[:: 1 if number % 2 == 0 else -1]:
                    speaker.synthesizer = synthesizers[name]
                    speaker.config = dataclasses.replace(speaker.config, early=early)
                    text_s, voice_s, spoken_s = rows[variant]
                    chat, person = ChatRef("bench", f"speech-{variant}"), Person("bench", variant)
                    message = IncomingMessage(chat, person, text=question, message_id=f"{variant}-{number}")
                    began = time.perf_counter()
                    async for event in app.service.replies.handle(message):
                        if isinstance(event, ReplyDone):
                            text_s.append(time.perf_counter() - began)
                        elif isinstance(event, Spoken):
                            voice_s.append(time.perf_counter() - began)
                            spoken_s.append(event.speech.seconds)
        finally:
            app.close()
            for synthesizer in synthesizers.values():
                if isinstance(synthesizer, PiperSynthesizer):
                    synthesizer.close()
    for name, (text_s, voice_s, spoken_s) in rows.items():
        added = [voice - text for voice, text in zip(voice_s, text_s, strict=True)]
        text, voice, spoken = (statistics.median(x) for x in (text_s, voice_s, spoken_s))
        print(
            f"{name:>40}: text reply complete {text:5.2f} s, voice note ready {voice:5.2f} s "
            f"(+{statistics.median(added):4.2f} s, {min(added):4.2f}-{max(added):4.2f}) for "
            f"{spoken:4.1f} s of speech (median of {len(text_s)} replies, bundled model)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default="espeak,piper")
    parser.add_argument("--rounds", type=int, default=1, help="times the questions are asked of each engine")
    parser.add_argument("--skip-synthesis", action="store_true", help="only the time until one can listen")
    args = parser.parse_args()
    names = args.engines.split(",")
    if not args.skip_synthesis:
        real_time_factors(args.runs, names)
    print("\nuntil the person can listen (same machine, one message at a time):")
    asyncio.run(until_listening(names, args.rounds))


if __name__ == "__main__":
    main()
