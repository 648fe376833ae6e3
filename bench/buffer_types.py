"""What does loading without llama.cpp's extra buffer types cost? (not a test)

    .venv/bin/python bench/buffer_types.py [--rounds 5] [--tokens 96] [--python OTHER_VENV/bin/python]

Iris loads every GGUF through ``core.gguf.open_gguf``, which switches off
llama.cpp's extra CPU buffer types (the AMX and repacked-weight buffers; on a
CPU with AMX the first crashes, ggml-org/llama.cpp#20824). This compares, for
the bundled model re-exported at F16, Q8_0 and Q4_0:

- before: a plain ``llama_cpp.Llama`` (llama.cpp's defaults, extra buffer types on);
- after: ``open_gguf`` (what Iris runs);

and, with ``--python``, the same two in another interpreter (for example a venv
whose llama-cpp-python was built with ``-march=native``), so that the portable
build and a native one are measured side by side.

Each measurement runs in a child process (a crash there is reported as a result,
not the end of the bench), rounds interleave the variants so a noisy machine slows
them alike, and the median over rounds is printed: time to first token of a
~400-token prompt and decode speed over ``--tokens`` tokens (end of text banned).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUANTS = ("f16", "q8_0", "q4_0")
PROMPT = "Tell me a long story about a lighthouse keeper and the sea. " * 36

# Run in the child: load one GGUF one way, time the first token and the decode.
CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
path, loader, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
if loader == "iris":
    from core.gguf import open_gguf
    llm = open_gguf(path, n_ctx=1024, n_batch=512)
else:
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=1024, n_batch=512, verbose=False)
import llama_cpp
features = llama_cpp.llama_print_system_info().decode()
prompt = {prompt!r}
ban_eos = {{llm.token_eos(): -1e9}}
llm.create_completion("Hello", max_tokens=4, temperature=0.0)  # warm-up
llm.reset()
began = time.perf_counter()
first, count = None, 0
for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, stream=True, logit_bias=ban_eos):
    count += 1
    if first is None:
        first = time.perf_counter()
end = time.perf_counter()
print(json.dumps({{"ttft_ms": (first - began) * 1000, "tok_s": (count - 1) / (end - first),
                   "amx": "AMX_INT8 = 1" in features}}))
"""


def measure(python: str, gguf: Path, loader: str, tokens: int) -> dict[str, float] | str:
    code = CHILD.format(root=str(ROOT), prompt=PROMPT)
    done = subprocess.run(
        [python, "-c", code, str(gguf), loader, str(tokens)], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        if done.returncode < 0:
            return f"crashed ({signal.Signals(-done.returncode).name})"
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--python", help="another interpreter to measure the same way (e.g. a native build)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from core.gguf import bundled_gguf_path, requantize

    pythons = {"this build": sys.executable}
    if args.python:
        pythons["--python build"] = args.python
    with tempfile.TemporaryDirectory() as tmp:
        models = {q: requantize(bundled_gguf_path(), Path(tmp) / f"smollm2-{q}.gguf", q) for q in QUANTS}
        variants = [
            (build, quant, loader)
            for build in pythons
            for quant in QUANTS
            for loader in ("llama.cpp defaults", "iris")
        ]
        results: dict[tuple[str, str, str], list[dict[str, float] | str]] = {v: [] for v in variants}
        for round_ in range(args.rounds):
            for build, quant, loader in variants:
                results[build, quant, loader].append(
                    measure(pythons[build], models[quant], "iris" if loader == "iris" else "plain", args.tokens)
                )
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

    print("| build | model | loader | time to first token (ms) | decode (tokens/s) | AMX in build |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for (build, quant, loader), runs in results.items():
        failures = [run for run in runs if isinstance(run, str)]
        if failures:
            print(f"| {build} | {quant} | {loader} | {failures[0]} | | |")
            continue
        ok = [run for run in runs if isinstance(run, dict)]
        ttft = statistics.median(run["ttft_ms"] for run in ok)
        speed = statistics.median(run["tok_s"] for run in ok)
        amx = "yes" if ok[0]["amx"] else "no"
        print(f"| {build} | {quant} | {loader} | {ttft:.0f} | {speed:.1f} | {amx} |")


if __name__ == "__main__":
    main()
