"""What an A/B test costs the people being answered (not a test).

    .venv/bin/python bench/ab.py [--people 16] [--rounds 3] [--max-tokens 64]

One ``ChatService`` as ``iris run`` builds it (real llama.cpp, SQLite in a temporary
directory). Side by side in one run, alternating, ``--rounds`` times each:

- **plain**: ``--people`` people send a text message at the same moment; the active
  model answers all of them;
- **A/B**: the same, with an experiment running on half the conversations whose
  candidate is the same GGUF registered under another name, so that only the cost of
  A/B serving shows: the arm lookup before every reply, and a second llama.cpp model
  with its own batch next to the first.

Reported: wall time for the crowd, median and p95 time to a complete reply, the arm
lookup per reply, a rating's time (it checks whether the experiment is due), and the
process's peak memory after each case.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bots.app import App, build_app
from bots.settings import Settings
from core.ab import start
from core.domain import ChatRef, IncomingMessage, Person, ReplyDone
from core.experiments import Arm, Decision
from core.ports import Generation
from storage.experiments import SqlExperiments

QUESTION = "Give me three tips for a good night's sleep."


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def crowd(app: App, people: int, tag: str) -> tuple[float, list[float], dict[Arm | None, int]]:
    """``people`` new conversations at once; wall time, per-reply times, replies per arm."""

    async def one(n: int) -> tuple[float, int]:
        person = Person("bench", f"{tag}-{n}")
        began = time.perf_counter()
        message = IncomingMessage(ChatRef("bench", person.user_id), person, text=QUESTION)
        done = [e async for e in app.service.replies.handle(message) if isinstance(e, ReplyDone)]
        assert done, "no reply"
        return time.perf_counter() - began, done[0].turn_id

    began = time.perf_counter()
    results = await asyncio.gather(*(one(n) for n in range(people)))
    wall = time.perf_counter() - began
    arms: dict[Arm | None, int] = {}
    with app.store.engine.connect() as connection:
        for _, turn_id in results:
            arm = connection.exec_driver_sql("SELECT arm FROM turns WHERE id = ?", (turn_id,)).scalar()
            key = Arm(arm) if arm else None
            arms[key] = arms.get(key, 0) + 1
    return wall, [seconds for seconds, _ in results], arms


def lookup_ms(app: App, times: int = 200) -> float:
    assert app.service.ab is not None
    began = time.perf_counter()
    for conversation in range(times):
        app.service.ab.choose(conversation, app.generator)
    return (time.perf_counter() - began) / times * 1000


async def rating_ms(app: App, times: int = 20) -> float:
    person = Person("bench", "rater")
    message = IncomingMessage(ChatRef("bench", "rater"), person, text="Hi")
    (done,) = [e async for e in app.service.replies.handle(message) if isinstance(e, ReplyDone)]
    began = time.perf_counter()
    for n in range(times):
        await app.service.feedback.rate(person, done.turn_id, up=n % 2 == 0)
    return (time.perf_counter() - began) / times * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path(tmp),
            generation=Generation(max_tokens=args.max_tokens, temperature=0.0, seed=1),
        )
        app = build_app(settings)
        try:
            app.warm_up()
            active = app.store.active_model()
            assert active is not None
            app.store.register_model("same-weights", active.gguf_path, active.base_model)
            experiments = SqlExperiments(app.store.engine)
            figures: dict[str, list[tuple[float, list[float]]]] = {"plain": [], "A/B": []}
            split: dict[Arm | None, int] = {}
            rss_one = 0.0
            for round_ in range(args.rounds):
                for case in ("plain", "A/B"):
                    running = experiments.running_experiment()
                    if case == "A/B" and running is None:
                        start(
                            experiments,
                            None,
                            "same-weights",
                            share=0.5,
                            min_ratings=10**6,
                            margin=0.1,
                            actor="bench",
                        )
                    if case == "plain" and running is not None:
                        experiments.end_experiment(running.id, Decision.ROLLBACK, "bench", {})
                    wall, replies, arms = await crowd(app, args.people, f"{case}-{round_}")
                    figures[case].append((wall, replies))
                    if case == "A/B":
                        split = arms
                    elif round_ == 0:
                        rss_one = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            lookup = lookup_ms(app)
            rate = await rating_ms(app)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        finally:
            app.close()
    print(f"{args.people} people at once, {args.rounds} rounds each, {args.max_tokens} tokens at most a reply")
    print(
        f"A/B split of the last round: {split.get(Arm.CONTROL, 0)} control, "
        f"{split.get(Arm.CANDIDATE, 0)} candidate"
    )
    print("| case | crowd wall s (median) | reply s p50 | reply s p95 |")
    print("| --- | --- | --- | --- |")
    for case, runs in figures.items():
        walls = [wall for wall, _ in runs]
        replies = [s for _, rs in runs for s in rs]
        print(
            f"| {case} | {statistics.median(walls):.1f} | {pct(replies, 0.5):.1f} | {pct(replies, 0.95):.1f} |"
        )
    plain = statistics.median(w for w, _ in figures["plain"])
    ab = statistics.median(w for w, _ in figures["A/B"])
    print(f"A/B / plain crowd wall: {ab / plain:.2f}x")
    print(f"arm lookup before a reply: {lookup:.2f} ms; a rating with the due check: {rate:.1f} ms")
    print(f"peak RSS: {rss_one:.0f} MB with the active model, {rss:.0f} MB with the candidate loaded too")


if __name__ == "__main__":
    asyncio.run(main())
