"""Voice notes through whisper one by one, then together (core.whisper_batch): not a test.

    .venv/bin/python bench/transcribe_batch.py [--counts 1,2,4,8,16] [--rounds 3]

For each count N: N different notes (the committed fixtures and espeak-ng sentences, decoded
once) transcribed one after another by a transcriber that batches nothing, then all N at the
same moment from N threads by one that batches up to N (``--batch`` caps it instead); the two
modes alternate within each round, so a noisy machine slows both alike. Prints, per N, the
median wall time of each mode with its spread (min-max over the rounds), the ratio, the same
for this process's CPU seconds (steadier than wall time on a machine shared with other work),
the decoder batches the worker formed, and whether every transcript was word for word the same
as one by one.

With ``--calls``: the CPU seconds a note of CTranslate2's two calls alone, encoder and beam
search, at batch sizes 1 to 16 (a 3 s note, 3 rounds, medians): what ``ENCODE_BATCH`` and the
default ``IRIS_WHISPER_BATCH`` were chosen by.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.ports import DecodedAudio
from core.transcription import WhisperConfig, WhisperTranscriber

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures"
SENTENCES = [
    "Please remind me to buy milk and bread tomorrow morning.",
    "How far is the moon from the earth?",
    "What should I cook for dinner tonight with rice and beans?",
    "Tell me a joke about a cat who learned to play the piano.",
    "Why do leaves change colour in the autumn?",
    "Can you explain how a bicycle stays upright while moving?",
    "What is the difference between weather and climate?",
    "Give me three ideas for a birthday present for my sister.",
    "How many hours of sleep does an adult need?",
    "Translate good night into French, please.",
]


def notes(transcriber: WhisperTranscriber) -> list[DecodedAudio]:
    """Distinct voice notes: the fixtures with speech, then espeak-ng sentences at two speeds."""
    files = [FIXTURES / name for name in ("capital_of_france.ogg", "greeting.ogg", "short_story.ogg")]
    decoded = [transcriber.decode(path.read_bytes(), 300) for path in files]
    if shutil.which("espeak-ng") is not None:
        with tempfile.TemporaryDirectory() as folder:
            for speed in (150, 185):
                for number, sentence in enumerate(SENTENCES):
                    wav = Path(folder) / f"{speed}-{number}.wav"
                    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(wav), sentence], check=True)
                    decoded.append(transcriber.decode(wav.read_bytes(), 300))
    return decoded


def calls(rounds: int) -> None:
    import ctranslate2
    import numpy as np
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    transcriber = WhisperTranscriber(WhisperConfig(batch=1))
    model = transcriber.load()
    note = transcriber.decode((FIXTURES / "short_story.ogg").read_bytes(), 300)
    features = pad_or_trim(model.feature_extractor(note.samples))[None]
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    prompt = model.get_prompt(tokenizer, [], without_timestamps=False)
    options = {"beam_size": 5, "max_length": 448, "return_scores": True, "return_no_speech_prob": True}
    encoded = np.asarray(model.model.encode(ctranslate2.StorageView.from_array(features)))
    cpu: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for size in (1, 2, 4, 8, 16):
            stacked = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(features, size, 0)))
            began = time.process_time()
            model.model.encode(stacked)
            cpu.setdefault(("encode", size), []).append((time.process_time() - began) / size)
            stacked = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(encoded, size, 0)))
            began = time.process_time()
            model.model.generate(stacked, [prompt] * size, **options)
            cpu.setdefault(("generate", size), []).append((time.process_time() - began) / size)
    print(f"\nCPU seconds a note, median of {rounds} (min-max):")
    print("| batch | encode | generate (beam 5) |")
    print("| --- | --- | --- |")
    for size in (1, 2, 4, 8, 16):
        cells = [cpu[(kind, size)] for kind in ("encode", "generate")]
        shown = [f"{statistics.median(c):.3f} ({min(c):.3f}-{max(c):.3f})" for c in cells]
        print(f"| {size} | {shown[0]} | {shown[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=0, help="cap on a batch; 0: the count")
    parser.add_argument("--calls", action="store_true", help="time CTranslate2's calls alone instead")
    args = parser.parse_args()
    if args.calls:
        calls(args.rounds)
        return
    counts = [int(n) for n in args.counts.split(",")]
    alone = WhisperTranscriber(WhisperConfig(batch=1))
    together = {n: WhisperTranscriber(WhisperConfig(batch=max(2, args.batch or n))) for n in counts}
    for transcriber in (alone, *together.values()):
        transcriber.load()
    audio = notes(alone)
    if len(audio) < max(counts):
        audio = (audio * max(counts))[: max(counts)]
    expected = [alone.transcribe(note).text for note in audio[: max(counts)]]  # also warms up
    times: dict[tuple[str, int], list[float]] = {}
    differ: dict[int, int] = {}  # together, against one by one
    drift: dict[int, int] = {}  # one by one, against itself in the first pass
    batches: dict[int, list[int]] = {}
    for _ in range(args.rounds):
        for n in counts:
            some = audio[:n]
            began, cpu = time.perf_counter(), time.process_time()
            texts = [alone.transcribe(note).text for note in some]
            times.setdefault(("alone", n), []).append(time.perf_counter() - began)
            times.setdefault(("alone cpu", n), []).append(time.process_time() - cpu)
            batcher = together[n].batcher
            seen = len(batcher.sizes) if batcher is not None else 0
            began, cpu = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(n) as pool:
                heard = [transcript.text for transcript in pool.map(together[n].transcribe, some)]
            times.setdefault(("together", n), []).append(time.perf_counter() - began)
            times.setdefault(("together cpu", n), []).append(time.process_time() - cpu)
            differ[n] = differ.get(n, 0) + sum(a != b for a, b in zip(expected, heard, strict=False))
            drift[n] = drift.get(n, 0) + sum(a != b for a, b in zip(expected, texts, strict=False))
            if batcher is not None:
                batches.setdefault(n, []).extend(
                    size for kind, size in list(batcher.sizes)[seen:] if kind == "generate"
                )
    print(f"\n{len(audio)} distinct notes available; median of {args.rounds} interleaved rounds (min-max):")
    print(
        "| notes | one by one | together | speed-up | CPU s one by one / together | decoder batches | differ |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in counts:
        one, many = times[("alone", n)], times[("together", n)]
        one_cpu, many_cpu = (
            statistics.median(times[("alone cpu", n)]),
            statistics.median(times[("together cpu", n)]),
        )
        sizes = batches.get(n, [])
        shown = f"{statistics.mean(sizes):.1f} notes on average" if sizes else "-"
        print(
            f"| {n} | {statistics.median(one):.2f} s ({min(one):.2f}-{max(one):.2f}) "
            f"| {statistics.median(many):.2f} s ({min(many):.2f}-{max(many):.2f}) "
            f"| **{statistics.median(one) / statistics.median(many):.2f}×** "
            f"| {one_cpu:.2f} / {many_cpu:.2f} ({one_cpu / many_cpu:.2f}×) | {shown} "
            f"| {differ[n]} of {n * args.rounds} (one by one: {drift[n]}) |"
        )


if __name__ == "__main__":
    main()
