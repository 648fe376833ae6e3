"""Iris under a crowd: many voice notes at once through the real service path (not a test).

    .venv/bin/python bench/load.py [--counts 1,4,16,32] [--parallel N] [--max-tokens 128] [--rounds 3]
        [--iris-run-counts 16,32] [--skip-service] [--iris-run-set IRIS_WHISPER_BATCH=8 ...]

For each count N, N people send the same voice note at the same moment to one
``ChatService`` built as ``iris run`` builds it (real faster-whisper, real llama.cpp,
SQLite in a temporary directory), once with one reply at a time
(``IRIS_LLM_PARALLEL=1``, how Iris served before batching) and once with
``--parallel`` replies decoded together (default: as many as ``iris run``
chooses on this machine), side by side, in ``--rounds`` rounds whose order
flips each round; the tables give medians with their min-max. While the notes
are answered, a probe rates an earlier
reply (👍) and reads the admin figures (/stats) every 250 ms, and a 10 ms
ticker records how late the event loop wakes.

Then the follow-up case: a conversation with about 1,500 tokens of history,
while 3 other chats are being answered, asks again; its time to first token
is compared with the same prompt sent cold (nothing of it evaluated before).

Then the same crowds through ``iris run telegram`` itself, with presses and
commands sent into them (``bench/iris_run_crowd.py``).

Prints Markdown tables (README, "Serving a crowd").
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from iris_run_crowd import RunResult, iris_run_crowd  # beside this file
from sqlalchemy import text as sql_text

from bots.app import App, build_app
from bots.settings import Settings
from core.batching import BatchedDecoder, Job, chat_tokens
from core.domain import Audio, ChatRef, IncomingMessage, Person, ReplyDelta, ReplyDone
from core.generation import LlamaGenerator, LlmConfig
from core.gguf import open_gguf
from core.ports import Generation

PROBE_EVERY_S = 0.25
TICK_S = 0.010


@dataclass
class Result:
    parallel: int
    count: int
    wall_s: float
    first_text_s: list[float]
    answered: int
    stored: int
    rate_ms: list[float]
    stats_ms: list[float]
    worst_lag_ms: float
    peak_rss_mb: float
    gguf: str

    @property
    def per_minute(self) -> float:
        return self.answered / self.wall_s * 60


R = TypeVar("R", Result, RunResult)  # a run of either table


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def crowd(settings: Settings, audio: bytes, count: int) -> Result:
    app = build_app(settings)
    try:
        app.warm_up()
        service = app.service
        # One earlier reply to rate during the load, as a person would.
        earlier_person = Person("bench", "earlier")
        earlier = [
            event
            async for event in service.replies.handle(
                IncomingMessage(ChatRef("bench", "earlier"), earlier_person, text="Hello!")
            )
        ]
        earlier_turn = next(e.turn_id for e in earlier if isinstance(e, ReplyDone))

        done = asyncio.Event()
        lags: list[float] = []
        rate_ms: list[float] = []
        stats_ms: list[float] = []

        async def ticker() -> None:
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(TICK_S)
                lags.append((time.perf_counter() - before - TICK_S) * 1000)

        async def probe() -> None:
            up = True
            while not done.is_set():
                began = time.perf_counter()
                await service.feedback.rate(earlier_person, earlier_turn, up)
                rate_ms.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                await service.admin.stats()
                stats_ms.append((time.perf_counter() - began) * 1000)
                up = not up
                await asyncio.sleep(PROBE_EVERY_S)

        async def person(n: int) -> tuple[float | None, bool]:
            message = IncomingMessage(
                ChatRef("bench", f"chat{n}"), Person("bench", f"p{n}"), audio=Audio(audio, "audio/ogg")
            )
            first: float | None = None
            answered = False
            async for event in service.replies.handle(message):
                if isinstance(event, ReplyDelta) and first is None:
                    first = time.perf_counter() - began
                answered = answered or isinstance(event, ReplyDone)
            return first, answered

        helpers = [asyncio.create_task(ticker()), asyncio.create_task(probe())]
        began = time.perf_counter()
        outcomes = await asyncio.gather(*(person(n) for n in range(count)))
        wall = time.perf_counter() - began
        done.set()
        await asyncio.gather(*helpers)
        with app.store.engine.connect() as connection:
            replies = "SELECT count(*) FROM turns WHERE role = 'assistant' AND text != ''"
            stored = connection.execute(sql_text(replies)).scalar_one() - 1  # less the earlier one
        return Result(
            parallel=settings.llm.parallel,
            count=count,
            wall_s=wall,
            first_text_s=[first for first, _ in outcomes if first is not None],
            answered=sum(answered for _, answered in outcomes),
            stored=stored,
            rate_ms=rate_ms,
            stats_ms=stats_ms,
            worst_lag_ms=max(lags, default=0.0),
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            gguf=local_gguf(app),
        )
    finally:
        app.close()


def local_gguf(app: App) -> str:
    """The GGUF the app's own llama.cpp model was loaded from (the bench serves no remote model)."""
    assert isinstance(app.generator, LlamaGenerator)
    return app.generator.load().model_path


def sets(event: threading.Event) -> Callable[[BaseException | None], None]:
    """A job's ``on_end`` that sets ``event``."""
    return lambda _error: event.set()


def follow_up(gguf: str, parallel: int, context_tokens: int) -> tuple[float, float, int, int]:
    """Time to first token of a follow-up with ~1,500 tokens of history, cold and with its slot kept."""
    llm = open_gguf(gguf, n_ctx=64)
    decoder = BatchedDecoder(llm, parallel, context_tokens, 512)
    reply = Generation(max_tokens=24)
    busy = Generation(max_tokens=200)
    history: list[dict[str, str]] = []
    topics = ["bees", "rivers", "bread", "trains", "maps", "owls", "tea", "bridges"]
    for topic in topics * 3:
        history.append(
            {"role": "user", "content": f"Tell me one thing about {topic} and why it matters to people."}
        )
        history.append(
            {"role": "assistant", "content": f"Here is something about {topic}: " + "it is old. " * 12}
        )
    history.append({"role": "user", "content": "Which of those did I ask about first?"})

    def first_token(tokens: list[int], others: int) -> float:
        background = [f"Write a long story about {topic}." for topic in topics[:others]]
        ended: list[threading.Event] = []
        for text in background:
            event = threading.Event()
            ended.append(event)
            decoder.submit(
                Job(
                    chat_tokens(llm, [{"role": "user", "content": text}]),
                    busy,
                    lambda _: None,
                    sets(event),
                )
            )
        time.sleep(0.5)  # the others are generating
        got = threading.Event()
        finished = threading.Event()
        began = time.perf_counter()
        decoder.submit(Job(tokens, reply, lambda _: got.set(), lambda _: finished.set()))
        got.wait(120)
        ttft = time.perf_counter() - began
        finished.wait(120)
        for event in ended:
            event.wait(300)
        return ttft

    try:
        cold_tokens = chat_tokens(llm, history)
        cold = first_token(cold_tokens, others=3)
        history.append({"role": "assistant", "content": "You asked about bees first."})
        history.append({"role": "user", "content": "And which one came last?"})
        warm_tokens = chat_tokens(llm, history)
        warm = first_token(warm_tokens, others=3)
        return cold, warm, len(cold_tokens), len(warm_tokens)
    finally:
        decoder.close()
        llm.close()


def bench_settings(tmp: str, name: str, parallel: int, max_tokens: int) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=Path(tmp),  # the models, exported once
        database_url=f"sqlite:///{tmp}/{name}.db",
        generation=Generation(max_tokens=max_tokens, temperature=0.0),
        llm=LlmConfig(parallel=parallel),
    )


def spread(values: list[float], digits: int = 1) -> str:
    """The median of the rounds, with their min-max."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def p50_p95(milliseconds: list[float]) -> str:
    return f"{pct(milliseconds, 0.5):.0f} / {pct(milliseconds, 0.95):.0f} ms"


def cases(rounds: list[list[R]], one_at_a_time: object) -> Iterator[tuple[int, Any, list[R], list[float]]]:
    """Per (count, slots): its runs over the rounds, and each round's pace over one at a time's in it."""
    for count, parallel in sorted(dict.fromkeys((r.count, r.parallel) for r in rounds[0])):
        runs = [r for results in rounds for r in results if (r.count, r.parallel) == (count, parallel)]
        ratios = [
            r.per_minute / one.per_minute
            for results in rounds
            for r in results
            for one in results
            if (r.count, r.parallel) == (count, parallel)
            and (one.count, one.parallel) == (count, one_at_a_time)
        ]
        yield count, parallel, runs, ratios


def print_service_table(rounds: list[list[Result]]) -> None:
    """Per count and slots: medians over the rounds; "×" compares with one at a time in the same round."""
    print()
    print(
        "| notes at once | replies decoded together | replies/min | × one at a time | first text p50 / p95 "
        "| 👍 p95 | /stats p95 | worst loop lag | answered / stored |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for count, parallel, runs, ratios in cases(rounds, one_at_a_time=1):
        print(
            f"| {count} | {parallel} | {spread([r.per_minute for r in runs])} | {spread(ratios, 2)} | "
            f"{spread([statistics.median(r.first_text_s) for r in runs])} s / "
            f"{spread([pct(r.first_text_s, 0.95) for r in runs])} s | "
            f"{pct([ms for r in runs for ms in r.rate_ms], 0.95):.0f} ms | "
            f"{pct([ms for r in runs for ms in r.stats_ms], 0.95):.0f} ms | "
            f"{max(r.worst_lag_ms for r in runs):.0f} ms | "
            f"{sum(r.answered for r in runs)}/{count * len(runs)} · {sum(r.stored for r in runs)} |"
        )
    print(flush=True)


def print_iris_run_table(rounds: list[list[RunResult]]) -> None:
    """The same through ``iris run telegram``: the crowd's pace and how long presses and commands took."""
    print()
    print(
        "| voice notes at once | decoded together | replies/min | × one at a time | first message p50 "
        "| 👍/👎 press p50 / p95 | /help p50 / p95 | /stats p50 / p95 | probes | peak RSS |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for count, parallel, runs, ratios in cases(rounds, one_at_a_time="1"):
        print(
            f"| {count} | {parallel} | {spread([r.per_minute for r in runs])} | {spread(ratios, 2)} | "
            f"{spread([statistics.median(r.first_message_s) for r in runs])} s | "
            f"{p50_p95([ms for r in runs for ms in r.press_ms])} | "
            f"{p50_p95([ms for r in runs for ms in r.help_ms])} | "
            f"{p50_p95([ms for r in runs for ms in r.stats_ms])} | "
            f"{sum(len(r.press_ms) for r in runs)} × 3 | {max(r.peak_rss_mb for r in runs):.0f} MB |"
        )
    print(flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voice", type=Path, default=Path("tests/fixtures/short_story.ogg"))
    parser.add_argument("--counts", default="1,4,16,32")
    parser.add_argument("--parallel", type=int, default=0, help="decoded together; 0: as iris run chooses")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iris-run-counts", default="16,32", help="through iris run telegram; empty: skip")
    parser.add_argument("--skip-service", action="store_true", help="only the iris run telegram crowd")
    parser.add_argument(
        "--iris-run-set", action="append", default=[], metavar="NAME=VALUE", help="a setting for iris run"
    )
    args = parser.parse_args()
    iris_run_settings: dict[str, str] = dict(setting.split("=", 1) for setting in args.iris_run_set)
    audio = args.voice.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        rounds: list[list[Result]] = []
        for round_ in range(0 if args.skip_service else args.rounds):
            results: list[Result] = []
            for count in [int(c) for c in args.counts.split(",")]:
                # Which goes first flips every round, so a machine that gets busier slows both alike.
                for parallel in (1, args.parallel)[:: 1 if round_ % 2 == 0 else -1]:
                    name = f"r{round_}-p{parallel}-n{count}"
                    settings = bench_settings(tmp, name, parallel, args.max_tokens)
                    results.append(await crowd(settings, audio, count))
                    print(f"done: {name} in {results[-1].wall_s:.1f} s", flush=True)
            rounds.append(results)
        if rounds:
            print_service_table(rounds)
            cold, warm, cold_len, warm_len = follow_up(rounds[0][0].gguf, rounds[0][-1].parallel, 2048)
            print(
                f"Follow-up with {cold_len} → {warm_len} tokens of history, 3 other chats being answered: "
                f"time to first token cold {cold * 1000:.0f} ms, "
                f"with the conversation's slot kept {warm * 1000:.0f} ms ({warm / cold:.0%} of cold).\n",
                flush=True,
            )
        if not args.iris_run_counts:
            return
        gguf = Path(exported_gguf(tmp, args.max_tokens))
        runs: list[list[RunResult]] = []
        for round_ in range(args.rounds):
            row: list[RunResult] = []
            for count in [int(c) for c in args.iris_run_counts.split(",")]:
                for parallel in (1, args.parallel or None)[:: 1 if round_ % 2 == 0 else -1]:
                    where = Path(tmp) / f"iris-run-r{round_}-p{parallel or 'default'}-n{count}"
                    tokens, extra = args.max_tokens, iris_run_settings
                    row.append(await iris_run_crowd(gguf, where, audio, count, parallel, tokens, extra))
                    print(f"done: {where.name} in {row[-1].wall_s:.1f} s", flush=True)
            runs.append(row)
        print_iris_run_table(runs)


def exported_gguf(tmp: str, max_tokens: int) -> str:
    """The GGUF ``iris run`` serves by default (the bundled model, exported once into the data folder)."""
    app = build_app(bench_settings(tmp, "export", 1, max_tokens))
    try:
        return local_gguf(app)
    finally:
        app.close()


if __name__ == "__main__":
    asyncio.run(main())
