"""The server path against the embedded one, side by side (not a test).

    .venv/bin/python bench/servers.py [--runs 7] [--max-tokens 64]

The same question, answered through the same ``ChatService`` by the embedded llama.cpp
(``LlamaGenerator``) and by llama-cpp-python's server (``python -m llama_cpp.server``, the
same llama.cpp build, same GGUF, on 127.0.0.1) through the openai client
(``ServerGenerator``), interleaved; then a voice note transcribed by the embedded whisper and
by faster-whisper-server on the same model. Medians of time to first text and of the whole
reply, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bots.app import build_app
from bots.cli_models import llama_server_config
from bots.settings import Settings
from core.domain import ChatRef, IncomingMessage, Person, ReplyDelta, ReplyDone
from core.generation import LlmConfig
from core.ports import Generation
from core.transcription import WhisperConfig, bundled_whisper_path

QUESTION = "Give me three tips for a good night's sleep."
NOTE = Path(__file__).parent.parent / "tests" / "fixtures" / "capital_of_france.ogg"


def start(command: list[str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{command[2]} did not start")


def port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def ask(service: object, n: int) -> tuple[float, float]:
    person = Person("bench", f"p{n}")
    message = IncomingMessage(ChatRef("bench", person.user_id), person, text=QUESTION)
    began = time.perf_counter()
    first = None
    async for event in service.replies.handle(message):  # type: ignore[attr-defined]
        if isinstance(event, ReplyDelta) and first is None:
            first = time.perf_counter() - began
        if isinstance(event, ReplyDone):
            return first or 0.0, time.perf_counter() - began
    raise RuntimeError("no reply")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generation = Generation(max_tokens=args.max_tokens, temperature=0.0, seed=1)
        embedded = build_app(Settings(_env_file=None, data_dir=Path(tmp) / "a", generation=generation))  # type: ignore[call-arg]
        embedded.warm_up()
        model = embedded.store.active_model()
        assert model is not None
        llm_port, whisper_port = port(), port()
        config = Path(tmp) / "llama.json"
        config.write_text(json.dumps(llama_server_config([model], "127.0.0.1", llm_port, 2048, None)))
        servers = [
            start(
                [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
                f"http://127.0.0.1:{llm_port}/v1/models",
            ),
            start(
                [
                    sys.executable,
                    "-m",
                    "faster_whisper_server",
                    str(bundled_whisper_path()),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(whisper_port),
                ],
                f"http://127.0.0.1:{whisper_port}/health",
            ),
        ]
        served = build_app(
            Settings(
                _env_file=None,  # type: ignore[call-arg]
                data_dir=Path(tmp) / "a",  # the same registry and GGUF
                llm=LlmConfig(url=f"http://127.0.0.1:{llm_port}/v1"),
                whisper=WhisperConfig(url=f"http://127.0.0.1:{whisper_port}/v1"),
                generation=generation,
            )
        )
        try:
            figures: dict[str, list[tuple[float, float]]] = {"embedded": [], "server": []}
            heard: dict[str, list[float]] = {"embedded": [], "server": []}
            audio = NOTE.read_bytes()
            for run in range(args.runs + 1):
                for name, app in (("embedded", embedded), ("server", served)):
                    reply = await ask(app.service, run)
                    began = time.perf_counter()
                    decoded = await asyncio.to_thread(app.transcriber.decode, audio, 60)
                    await asyncio.to_thread(app.transcriber.transcribe, decoded)
                    listened = time.perf_counter() - began
                    if run:  # the first round warms both up
                        figures[name].append(reply)
                        heard[name].append(listened)
        finally:
            embedded.close()
            served.close()
            for server in servers:
                server.kill()
    print(f"{args.runs} runs each, interleaved, {args.max_tokens} tokens at most, medians")
    print("| path | first text ms | whole reply ms | transcribe ms |")
    print("| --- | --- | --- | --- |")
    medians = {}
    for name in figures:
        first = statistics.median(f for f, _ in figures[name]) * 1000
        whole = statistics.median(w for _, w in figures[name]) * 1000
        listen = statistics.median(heard[name]) * 1000
        medians[name] = (first, whole, listen)
        print(f"| {name} | {first:.0f} | {whole:.0f} | {listen:.0f} |")
    e, s = medians["embedded"], medians["server"]
    print(
        f"server / embedded: first text {s[0] / e[0]:.2f}x, whole reply {s[1] / e[1]:.2f}x, "
        f"transcribe {s[2] / e[2]:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
