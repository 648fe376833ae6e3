"""The correction memory, measured as the issue asks (#25): one approved correction per fact, then
questions nobody taught (not a test: a few minutes on 2 cores).

    .venv/bin/python bench/memory.py [--facts NAME|PATH …] [--policies serve …] [--json FILE]

1. Each fact is taught as an admin would: ``iris ask`` the question, ``iris rate TURN down --fix
   ANSWER``, ``iris review --approve ID`` (the real command line, one process each).
2. The app ``iris run`` builds (``bots.app.build_app``, real llama.cpp and SQLite) is asked, in
   one process, each fact's unseen wordings, its near misses (same subject, another answer) and
   the unrelated messages, under several policies side by side:
   * ``serve``: a match is answered with the approved text as it is;
   * ``serve-unchecked``: the same without the question check (``core.question_kind``): the
     embedding alone decides, as before issue 25's check;
   * ``serve-no-contrasts``: ``serve`` without the rule-made contrast questions
     (``finetune.lanes.contrasts``): every correction is indexed again without them first;
   * ``serve-no-answer-check``: ``serve`` without the answer check (``ANSWER_MARGIN``) and
     without putting misspelt words right first (``core.spelling``): the memory as of stop 37;
   * ``ground``: a match is answered by the model with the approved text given to it;
   * ``both``: grounded from ``match``, served from ``serve`` (the configured thresholds).
   A wording is "answered with the fact" when the reply holds every key word of the fact; an
   unrelated or near-miss message "uses a fact" when the memory matched it or its reply holds any
   fact's key words.
3. Latency: the lookup alone (embedding + search + check) on every unrelated and near-miss
   message, with the check on and off, and the reply time of the unrelated messages with the
   memory on and off, interleaved.

``--facts`` takes the sets' names (``tuning``, ``heldout``, ``fresh``, ``blind`` … ``blind10``:
tests/fixtures/memory/) or paths; every set there by default.

Prints a Markdown table; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bots.app import App, build_app
from bots.settings import Settings
from core.domain import ChatRef, CorrectionStatus, IncomingMessage, Person, ReplyDone
from core.memory import ANSWER_MARGIN, MemoryConfig
from finetune.lanes import contrasts

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures/memory"
IRIS = [str(Path(sys.executable).parent / "iris")]


# How a match is answered: the approved text as it is, the model with it given, or both by
# closeness; whether the question check runs (True) or the embedding alone decides; whether
# the corrections are indexed with their contrast questions; and whether the answer check runs and
# misspelt words are put right.
POLICIES: dict[str, tuple[Callable[[MemoryConfig], MemoryConfig], bool, bool, bool]] = {
    "serve": (lambda c: replace(c, serve=c.match), True, True, True),
    "serve-no-contrasts": (lambda c: replace(c, serve=c.match), True, False, True),
    "serve-no-answer-check": (lambda c: replace(c, serve=c.match), True, True, False),
    "serve-unchecked": (lambda c: replace(c, serve=c.match), False, True, True),
    "ground": (lambda c: replace(c, serve=1.01), True, True, True),
    "both": (lambda c: c, True, True, True),
}


def use_policy(app: App, policy: str, config: MemoryConfig) -> None:
    memory = app.service.memory
    assert memory is not None, "the bench needs the correction memory on"
    adjust, check, with_contrasts, answer_check = POLICIES[policy]
    memory.config = adjust(config)
    memory.check_question = check
    memory.answer_margin = ANSWER_MARGIN if answer_check else float("inf")
    memory.respell = answer_check
    wanted = contrasts if with_contrasts else no_contrasts
    if memory.contrasts is not wanted:
        memory.contrasts = wanted
        for correction in app.store.corrections(CorrectionStatus.APPROVED):
            memory.learn(correction)


def no_contrasts(question: str) -> list[str]:
    return []


def fact_set(name: str) -> Path:
    """A set's path from its name ("fresh") or a path."""
    named = FIXTURES / f"{name}.json"
    return named if not name.endswith(".json") and named.exists() else Path(name)


def iris(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*IRIS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"iris {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def teach(env: dict[str, str], facts: list[dict[str, object]]) -> float:
    """One approved correction per fact through the command line; seconds it took."""
    began = time.perf_counter()
    for n, fact in enumerate(facts):
        asked = json.loads(iris(env, "ask", "--json", "--chat", f"teach-{n}", str(fact["question"])))
        stored = iris(env, "rate", str(asked["turn_id"]), "down", "--fix", str(fact["answer"]))
        correction = re.search(r"correction (\d+) stored", stored)
        assert correction, stored
        iris(env, "review", "--approve", correction.group(1))
    return time.perf_counter() - began


def has(text: str, keys: list[str]) -> bool:
    return all(key.lower() in text.lower() for key in keys)


async def ask(app: App, text: str, chat: str) -> tuple[ReplyDone | None, float]:
    began = time.perf_counter()
    done = None
    message = IncomingMessage(ChatRef("console", chat), Person("console", "bench"), text=text)
    async for event in app.service.replies.handle(message):
        if isinstance(event, ReplyDone):
            done = event
    return done, (time.perf_counter() - began) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def measure(app: App, data: dict[str, Any], policy: str, config: MemoryConfig) -> dict[str, object]:
    memory = app.service.memory
    assert memory is not None, "the bench needs the correction memory on"
    use_policy(app, policy, config)
    facts = data["facts"]
    all_keys = [k for fact in facts for k in fact["keys"]]
    chat = iter(range(10**6))
    hits = used_near = used_unrelated = 0
    unseen = [(fact, w) for fact in facts for w in fact["unseen"]]
    misses: list[str] = []
    for fact, wording in unseen:
        done, _ = await ask(app, wording, f"{policy}-{next(chat)}")
        if done is not None and has(done.text, fact["keys"]):
            hits += 1
        else:
            misses.append(wording)
    near = [q for fact in facts for q in fact["near_miss"]]
    bleed: list[str] = []
    matched_near = 0
    for question in near:
        done, _ = await ask(app, question, f"{policy}-{next(chat)}")
        matched_near += done is not None and done.memory is not None
        # Used: what the person reads holds a taught fact (a served fact always does).
        if done is not None and any(k.lower() in done.text.lower() for k in all_keys):
            used_near += 1
            bleed.append(question)
    for message in data["unrelated"]:
        # The model is not asked unless the memory matched: what it writes alone is not the memory's doing.
        if memory.recall(message, app.generator.model_name) is not None:
            used_unrelated += 1
            bleed.append(message)
    return {
        "policy": policy,
        "unseen": len(unseen),
        "answered_with_fact": hits / len(unseen),
        "near_miss": len(near),
        "unrelated": len(data["unrelated"]),
        "fact_used_near": used_near / len(near),
        "matched_near": matched_near / len(near),
        "fact_used_unrelated": used_unrelated / len(data["unrelated"]),
        "matched_unrelated": used_unrelated / len(data["unrelated"]),
        "fact_used_either": (used_near + used_unrelated) / (len(near) + len(data["unrelated"])),
        "missed": misses,
        "bled": bleed,
    }


async def latency(app: App, data: dict[str, Any], rounds: int) -> dict[str, float]:
    memory = app.service.memory
    assert memory is not None, "the bench needs the correction memory on"
    messages = [*data["unrelated"], *(q for f in data["facts"] for q in f["near_miss"])]
    lookups: dict[bool, list[float]] = {True: [], False: []}  # check on, off
    for _ in range(rounds):
        for message in messages:
            for check in (True, False):
                memory.check_question = check
                began = time.perf_counter()
                memory.recall(message, app.generator.model_name)
                lookups[check].append((time.perf_counter() - began) * 1000)
    memory.check_question = True
    on: list[float] = []
    off: list[float] = []
    enabled = memory.config
    for r in range(rounds):
        for n, message in enumerate(data["unrelated"][:12]):
            for state, sink in ((True, on), (False, off)) if (r + n) % 2 == 0 else ((False, off), (True, on)):
                memory.config = replace(enabled, enabled=state)
                _, ms = await ask(app, message, f"lat-{state}-{r}-{n}")
                sink.append(ms)
    memory.config = enabled
    return {
        "lookup_p50_ms": statistics.median(lookups[True]),
        "lookup_p95_ms": pct(lookups[True], 0.95),
        "lookup_unchecked_p50_ms": statistics.median(lookups[False]),
        "lookup_unchecked_p95_ms": pct(lookups[False], 0.95),
        "reply_p95_on_ms": pct(on, 0.95),
        "reply_p95_off_ms": pct(off, 0.95),
        "reply_p50_on_ms": statistics.median(on),
        "reply_p50_off_ms": statistics.median(off),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sets = sorted(path.stem for path in FIXTURES.glob("*.json"))
    parser.add_argument("--facts", nargs="+", default=sets, help="names or paths")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for path in map(fact_set, args.facts):
        data = json.loads(path.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                "IRIS_DATA_DIR": str(Path(tmp) / "data"),
                "IRIS_GENERATION_TEMPERATURE": "0",
                "IRIS_GENERATION_MAX_TOKENS": str(args.max_tokens),
                "IRIS_TTS_REPLIES": "off",
            }
            taught_s = teach(env, data["facts"])
            os.environ.update(env)
            app = build_app(Settings(_env_file=None))  # type: ignore[call-arg]
            memory = app.service.memory
            assert memory is not None, "the bench needs the correction memory on"
            try:
                config = memory.config
                row: dict[str, Any] = {"facts": path.name, "taught_s": round(taught_s, 1)}
                for policy in args.policies:
                    row[policy] = await measure(app, data, policy, config)
                use_policy(app, "serve", config)
                row["latency"] = await latency(app, data, args.rounds)
                row["embedder"] = memory.embedder.name
                row["threshold"] = config.match
            finally:
                app.close()
        results.append(row)
    print(
        "| facts | policy | unseen wordings answered with the fact | near misses matched "
        "(reply holds a taught fact) | unrelated matched | lookup p50 / p95 | reply p95 memory on / off |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in results:
        lat = row["latency"]
        for policy in args.policies:
            m = row[policy]
            lookup = "lookup_unchecked" if policy == "serve-unchecked" else "lookup"
            print(
                f"| {row['facts']} | {policy} | {m['answered_with_fact']:.0%} of {m['unseen']} | "
                f"{m['matched_near']:.0%} of {m['near_miss']} ({m['fact_used_near']:.0%}) | "
                f"{m['matched_unrelated']:.0%} of {m['unrelated']} | "
                f"{lat[f'{lookup}_p50_ms']:.1f} / {lat[f'{lookup}_p95_ms']:.1f} ms | "
                f"{lat['reply_p95_on_ms']:.0f} / {lat['reply_p95_off_ms']:.0f} ms |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
