"""Which embedding model should the correction memory use, at what threshold? (not a test)

    .venv/bin/python bench/embedding.py [--threads 1] [--runs 200] [--only NAME] [--json FILE]

Candidates: all-MiniLM-L6-v2 converted to GGUF (core.embedding) in f32, f16 and q8_0 (llama.cpp's
own quantizer, ``llama_model_quantize``, from the f32 file), and as a baseline the bundled
SmolLM2-135M's own embeddings (mean pooling over its last hidden layer). Each runs in a fresh
process, so that load time and memory are its own. On each fact file (tests/fixtures/memory):

- recall@1: each unseen wording's nearest fact question is its own fact's;
- the threshold: chosen on tuning.json only, as the lowest cosine that lets at most 2 % of the
  unrelated and near-miss messages match any fact (midway to the next unseen wording above it);
  at that threshold, on each file: ``hit`` = share of unseen wordings whose best match is their
  own fact at or above it, ``false`` = share of unrelated + near-miss messages whose best match
  reaches it (also split: ``near``, ``unrel``);
- the threshold against unrelated messages only (at most 2 % of them match), the near misses left
  to a later check (the grounded model, or a rule): hit, near and unrel at it on each file;
- latency of one short message (one text per call), wall and CPU time, p50/p95 over ``--runs``;
  load time; RSS added. Wall time on a shared machine is mostly waiting: CPU time is the cost.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "memory"
FALSE_SHARE = 0.02
SHORT = "Who designed the logo?"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def scores(embed: Any, facts: dict[str, Any]) -> dict[str, Any]:
    """Best cosine and best fact index for every probe of one fact file."""
    questions = embed([f["question"] for f in facts["facts"]])

    def best(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        sims = embed(texts) @ questions.T
        return sims.max(axis=1), sims.argmax(axis=1)

    unseen = [(i, u) for i, f in enumerate(facts["facts"]) for u in f["unseen"]]
    u_score, u_best = best([u for _, u in unseen])
    n_score, _ = best([n for f in facts["facts"] for n in f["near_miss"]])
    r_score, _ = best(facts["unrelated"])
    own = np.array([i for i, _ in unseen])
    return {
        "recall_at_1": float((u_best == own).mean()),
        "unseen": [float(s) if b == o else -1.0 for s, b, o in zip(u_score, u_best, own, strict=True)],
        "near": n_score.tolist(),
        "unrelated": r_score.tolist(),
    }


def threshold(tuning: dict[str, Any], near_misses: bool = True) -> float:
    negatives = sorted(tuning["near"] * near_misses + tuning["unrelated"], reverse=True)
    allowed = math.floor(FALSE_SHARE * len(negatives))
    floor = float(negatives[allowed])  # a threshold above this lets at most `allowed` negatives through
    above = [s for s in tuning["unseen"] if s > floor]
    return (floor + float(min(above))) / 2 if above else floor + 1e-4


def at(found: dict[str, Any], t: float) -> dict[str, float]:
    negatives = found["near"] + found["unrelated"]
    return {
        "hit": float(np.mean([s >= t for s in found["unseen"]])),
        "false": float(np.mean([s >= t for s in negatives])),
        "near": float(np.mean([s >= t for s in found["near"]])),
        "unrel": float(np.mean([s >= t for s in found["unrelated"]])),
    }


def measure(name: str, gguf: str, threads: int, runs: int) -> dict[str, Any]:
    """One candidate, in its own process."""
    from core.embedding import Embedder

    embedder = Embedder(Path(gguf), threads=threads, name=name)
    before = rss_kib()
    start = time.perf_counter()
    embedder.embed([""])
    load_s = time.perf_counter() - start
    rss_mib = (rss_kib() - before) / 1024
    sets = {f: json.loads((FIXTURES / f"{f}.json").read_text()) for f in ("tuning", "heldout")}
    found = {f: scores(embedder.embed, facts) for f, facts in sets.items()}
    t = threshold(found["tuning"])
    t_unrelated = threshold(found["tuning"], near_misses=False)
    for _ in range(10):
        embedder.embed([SHORT])
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        embedder.embed([SHORT])
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    times.sort()
    cpu.sort()
    return {
        "name": name,
        "file_mib": Path(gguf).stat().st_size / 2**20,
        "threshold": t,
        "recall_at_1": {f: found[f]["recall_at_1"] for f in found},
        "at_threshold": {f: at(found[f], t) for f in found},
        "threshold_unrelated_only": t_unrelated,
        "at_threshold_unrelated_only": {f: at(found[f], t_unrelated) for f in found},
        "latency_ms": {"p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]},
        "cpu_ms": {"p50": statistics.median(cpu), "p95": cpu[int(0.95 * (len(cpu) - 1))]},
        "load_s": load_s,
        "rss_added_mib": rss_mib,
    }


def candidates(cache: Path) -> tuple[list[tuple[str, str]], list[str]]:
    from core.embedding import minilm_gguf
    from core.gguf import bundled_gguf_path, requantize

    found = [(f"all-MiniLM-L6-v2 ({d} GGUF)", str(minilm_gguf(cache, d))) for d in ("f32", "f16")]
    skipped = []
    try:
        q8 = requantize(minilm_gguf(cache, "f32"), cache / "all-minilm-l6-v2-llama-q8_0.gguf", "q8_0")
        found.append(("all-MiniLM-L6-v2 (q8_0, llama_model_quantize)", str(q8)))
    except Exception as error:  # reported, not fatal: the others still run
        skipped.append(f"q8_0 via llama_model_quantize: {error}")
    found.append(("SmolLM2-135M-Instruct (Q4_1, mean pooling)", str(bundled_gguf_path())))
    return found, skipped


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| model | MiB | R@1 tune / held | t (all negatives) | tune hit / false "
        "| held hit / false (near, unrel) | t (unrelated only) | held hit / near / unrel "
        "| wall p50 / p95 ms | CPU p50 / p95 ms | load s | RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tune, held = r["at_threshold"]["tuning"], r["at_threshold"]["heldout"]
        loose = r["at_threshold_unrelated_only"]["heldout"]
        rows.append(
            f"| {r['name']} | {r['file_mib']:.0f} "
            f"| {r['recall_at_1']['tuning']:.2f} / {r['recall_at_1']['heldout']:.2f} | {r['threshold']:.3f} "
            f"| {tune['hit']:.2f} / {tune['false']:.3f} "
            f"| {held['hit']:.2f} / {held['false']:.3f} ({held['near']:.2f}, {held['unrel']:.3f}) "
            f"| {r['threshold_unrelated_only']:.3f} "
            f"| {loose['hit']:.2f} / {loose['near']:.2f} / {loose['unrel']:.3f} "
            f"| {r['latency_ms']['p50']:.1f} / {r['latency_ms']['p95']:.1f} "
            f"| {r['cpu_ms']['p50']:.1f} / {r['cpu_ms']['p95']:.1f} | {r['load_s']:.2f} "
            f"| {r['rss_added_mib']:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="run only the candidates whose name contains this")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--cache", type=Path, default=None, help="where the GGUFs go (default: a temporary folder)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        found, skipped = candidates(args.cache or Path(scratch))
        context = multiprocessing.get_context("spawn")
        results = []
        for name, gguf in found:
            if args.only not in name:
                continue
            with context.Pool(1) as pool:
                results.append(pool.apply(measure, (name, gguf, args.threads, args.runs)))
    print(table(results))
    for reason in skipped:
        print(f"skipped: {reason}")
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "skipped": skipped, "threads": args.threads}, indent=2)
        )


if __name__ == "__main__":
    main()
