"""Which whisper hears every language well enough, and fast enough? (not a test; issue #28)

    flock /tmp/iris-cpu.lock .venv/bin/python bench/languages.py [--runs 3]

The voice notes of ``tests/fixtures/languages/`` (espeak-ng voices, one per language, made by
``make_notes.sh``), each through the bundled whisper ``base`` (multilingual, the default) and the
bundled ``tiny.en``, side by side in one run: per language the word accuracy (1 - WER, words
lowercased and stripped of punctuation), the language whisper detected and the time per note
(decoding included; the median of ``--runs`` after one warm-up, the models interleaved note by
note so that a noisy machine slows both alike); then, per model, the share of words right over
every English note (the three the other tests send too) and the time for the 10 s note. The settings
are Iris's defaults (int8, beam 5, VAD on). The tests reuse ``notes`` and ``word_accuracy``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from core.transcription import WhisperConfig, WhisperTranscriber
from core.whisper_models import BASE, TINY_EN

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures"
NOTES = FIXTURES / "languages"
# The English voice notes the other tests send (tests/fixtures/make_voice_notes.sh, en-us, 160 words
# a minute): pooled with the English notes above for the "English within 5 points" comparison.
ENGLISH_FIXTURES = {
    "capital_of_france": "What is the capital of France?",
    "greeting": "Good morning, how are you today?",
    "short_story": "Tell me a short story about a dragon.",
}
TEN_SECONDS = "ten_seconds"
MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Note:
    """A voice-note fixture: its file, the espeak-ng voice that said it, its language and its words."""

    name: str
    voice: str
    words_per_minute: str
    language: str
    text: str
    folder: Path = NOTES

    @property
    def audio(self) -> bytes:
        return (self.folder / f"{self.name}.ogg").read_bytes()


def notes() -> list[Note]:
    """The fixtures as ``notes.tsv`` lists them (the 10 s note last)."""
    lines = (NOTES / "notes.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    return [Note(name, voice, speed, language, text) for name, voice, speed, language, text in rows]


def words(text: str) -> list[str]:
    """The words compared: lowercased, punctuation dropped (``peux-tu`` is two words)."""
    return re.findall(r"\w+", text.casefold())


def word_accuracy(reference: str, heard: str) -> float:
    """1 - the word error rate of ``heard`` against ``reference`` (word-level edit distance)."""
    expected, got = words(reference), words(heard)
    previous = list(range(len(got) + 1))
    for i, word in enumerate(expected, start=1):
        current = [i]
        for j, other in enumerate(got, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return 1 - previous[-1] / max(len(expected), 1)


@dataclass
class Row:
    accuracy: float
    language: str | None
    seconds: list[float]


def measure(transcriber: WhisperTranscriber, note: Note) -> tuple[float, float, str | None]:
    """One note through ``transcriber``: seconds taken, word accuracy, language detected."""
    began = time.perf_counter()
    transcript = transcriber.transcribe(transcriber.decode(note.audio, MAX_SECONDS))
    took = time.perf_counter() - began
    return took, word_accuracy(note.text, transcript.text), transcript.language


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    models = {name: WhisperTranscriber(WhisperConfig(model=name)) for name in (BASE, TINY_EN)}
    for name, transcriber in models.items():
        began = time.perf_counter()
        transcriber.load()
        print(f"{name}: loaded in {time.perf_counter() - began:.2f} s ({transcriber.model_source})")
    rows: dict[tuple[str, str], Row] = {}
    english = [Note(name, "en-us", "160", "en", text, FIXTURES) for name, text in ENGLISH_FIXTURES.items()]
    all_notes = notes() + english
    for note in all_notes:
        for transcriber in models.values():
            measure(transcriber, note)  # warm-up
        for run in range(args.runs):
            order = list(models.items()) if run % 2 == 0 else list(reversed(models.items()))
            for name, transcriber in order:
                took, accuracy, language = measure(transcriber, note)
                row = rows.setdefault((note.name, name), Row(accuracy, language, []))
                row.seconds.append(took)

    print(f"\n{args.runs} runs each, the median; word accuracy = 1 - WER")
    print("| language | base: words right | heard as | s/note | tiny.en: words right | s/note |")
    print("| --- | --- | --- | --- | --- | --- |")
    for note in all_notes:
        base, tiny = rows[(note.name, BASE)], rows[(note.name, TINY_EN)]
        base_s, tiny_s = statistics.median(base.seconds), statistics.median(tiny.seconds)
        print(
            f"| {note.name} ({note.language}) | {base.accuracy:.0%} | {base.language} | {base_s:.2f} "
            f"| {tiny.accuracy:.0%} | {tiny_s:.2f} |"
        )
    others = [n for n in all_notes if n.name != TEN_SECONDS and n.language != "en"]
    spoken_english = [n for n in all_notes if n.language == "en"]
    said = sum(len(words(n.text)) for n in spoken_english)
    for name in models:
        mean = statistics.mean(rows[(n.name, name)].accuracy for n in others)
        wrong = sum((1 - rows[(n.name, name)].accuracy) * len(words(n.text)) for n in spoken_english)
        ten = statistics.median(rows[(TEN_SECONDS, name)].seconds)
        print(
            f"{name}: English {1 - wrong / said:.1%} of {said} words on {len(spoken_english)} notes; "
            f"mean word accuracy {mean:.0%} over the {len(others)} other notes; the 10 s note in {ten:.2f} s"
        )


if __name__ == "__main__":
    main()
