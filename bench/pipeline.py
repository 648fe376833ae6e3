"""How much does Iris add on top of the raw libraries? (not a test)

    .venv/bin/python bench/pipeline.py [--runs 7] [--voice tests/fixtures/capital_of_france.ogg]

In one process, on the same voice note, interleaving the three so that a noisy
machine slows them alike:

1. raw faster-whisper: ``WhisperModel.transcribe`` with the service's settings;
2. raw llama.cpp: ``create_chat_completion`` on the same messages, producing
   the same reply (temperature 0) and so the same number of tokens;
3. the whole service path: store the turn, probe, transcribe, build the prompt,
   stream the reply, store it (SQLite in a temporary directory).

Prints each median, the ratio service / (raw transcribe + raw generate), and
the worst lag a 10 ms ticker saw on the event loop while the service answered.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from bots.app import build_app
from bots.settings import Settings
from core.domain import Audio, ChatRef, IncomingMessage, Person, ReplyDone
from core.generation import LlamaGenerator
from core.gguf import open_gguf
from core.ports import Generation
from core.prompt import build_prompt
from core.transcription import WhisperTranscriber

if TYPE_CHECKING:
    from llama_cpp.llama_types import CreateChatCompletionStreamResponse

TICK_S = 0.010


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep 10 ms at a time and record how late each wake-up was."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - before - TICK_S)


async def service_once(app: object, message: IncomingMessage) -> tuple[float, float, ReplyDone]:
    from bots.app import App

    assert isinstance(app, App)
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    began = time.perf_counter()
    done = None
    async for event in app.service.replies.handle(message):
        if isinstance(event, ReplyDone):
            done = event
    elapsed = time.perf_counter() - began
    stop.set()
    await tick
    assert done is not None, "the service gave no reply"
    await app.service.privacy.reset(message.chat, message.sender)  # same prompt every run
    return elapsed, max(lags, default=0.0), done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--voice", type=Path, default=Path("tests/fixtures/capital_of_france.ogg"))
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    audio = args.voice.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path(tmp),
            generation=Generation(max_tokens=args.max_tokens, temperature=0.0),
        )
        app = build_app(settings)
        app.warm_up()
        # The bench runs the models in this process, not on servers.
        assert isinstance(app.generator, LlamaGenerator) and isinstance(app.transcriber, WhisperTranscriber)
        gguf = app.generator.load().model_path
        whisper = WhisperModel(
            app.transcriber.model_source, device="cpu", compute_type=settings.whisper.compute_type
        )
        llm = open_gguf(gguf, n_ctx=settings.llm.context_tokens)
        message = IncomingMessage(ChatRef("bench", "1"), Person("bench", "1"), audio=Audio(audio, "audio/ogg"))

        def raw_transcribe() -> tuple[float, str]:
            began = time.perf_counter()
            segments, _ = whisper.transcribe(
                io.BytesIO(audio),
                beam_size=settings.whisper.beam_size,
                vad_filter=True,
                condition_on_previous_text=False,
            )
            text = " ".join(s.text.strip() for s in segments)
            return time.perf_counter() - began, text

        def raw_generate(text: str) -> tuple[float, int]:
            messages = build_prompt(
                settings.chat.system_prompt, [], text, lambda t: len(llm.tokenize(t.encode())), 10**6
            )
            began = time.perf_counter()
            tokens = 0
            chunks = llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],  # type: ignore[misc]
                stream=True,
                max_tokens=args.max_tokens,
                temperature=0.0,
                top_p=settings.generation.top_p,
                top_k=settings.generation.top_k,
                repeat_penalty=settings.generation.repeat_penalty,
            )
            for chunk in cast("Iterator[CreateChatCompletionStreamResponse]", chunks):  # streamed
                tokens += bool(chunk["choices"][0]["delta"].get("content"))
            return time.perf_counter() - began, tokens

        transcribe_s, generate_s, service_s, worst_lags, reply = [], [], [], [], None
        for _ in range(args.runs):
            seconds, text = raw_transcribe()
            transcribe_s.append(seconds)
            seconds, tokens = raw_generate(text)
            generate_s.append(seconds)
            elapsed, lag, reply = asyncio.run(service_once(app, message))
            service_s.append(elapsed)
            worst_lags.append(lag)
        app.close()

    med = statistics.median
    raw = med(transcribe_s) + med(generate_s)
    print(f"voice note: {args.voice} · {args.runs} runs each, interleaved · reply: {reply.text!r}")  # type: ignore[union-attr]
    print(f"raw faster-whisper transcribe   median {med(transcribe_s) * 1000:8.1f} ms")
    print(f"raw llama.cpp generate ({tokens:3d} pieces) median {med(generate_s) * 1000:8.1f} ms")
    print(f"service path (store+probe+transcribe+reply+store) median {med(service_s) * 1000:8.1f} ms")
    print(f"ratio service / (raw transcribe + raw generate): {med(service_s) / raw:.3f}")
    print(
        f"worst event-loop lag (10 ms ticker) during service runs: {max(worst_lags) * 1000:.1f} ms "
        f"(per run: {', '.join(f'{lag * 1000:.0f}' for lag in worst_lags)} ms)"
    )


if __name__ == "__main__":
    main()
