"""How close does the service's decoder come to llama.cpp's own batched decoding? (not a test)

    .venv/bin/python bench/ceiling.py [--sizes 1,2,4,8,16] [--rounds 3] [--max-tokens 128] [--json]

For each size N, N different short questions are answered at once, two ways,
interleaved by round (ceiling N, service N, then the next size; the order of
the two flips every round, so a machine that gets busier slows both alike):

1. **ceiling**: the questions' prompts decoded directly through llama.cpp's
   batch API: one context with N sequences, one ``llama_decode`` per step for
   every sequence still writing, the next token picked by the same sampler
   chain the service uses. No service, no threads, no event loop.
2. **service**: the same questions through ``core.generation.LlamaGenerator``
   (``core.batching.BatchedDecoder`` underneath), driven as ``ChatService``
   drives it: the prompt built by ``core.prompt.build_prompt``, each reply
   streamed by the generator's ``stream`` (the decoder's thread hands each
   piece to the asyncio event loop). No platform and no storage.

Both use the model, context size, threads and batch size of ``iris run``
(``IRIS_LLM_*``; the bundled model is exported once into ``data/models``),
``IRIS_GENERATION_*`` for sampling, and a fresh context each round (nothing
of a prompt is cached from the round before). Throughput is the tokens of
the replies' text (retokenized, the same count on both sides) per second of
wall time from the first prompt to the last token. Prints, per N, the
median of the rounds with their min-max and the ratio service / ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bots.app import configured_model
from bots.settings import Settings
from core.batching import chat_tokens, context_params
from core.domain import ModelVersion
from core.generation import LlamaGenerator, LlmConfig, whole
from core.gguf import open_gguf
from core.ports import Generation
from core.prompt import build_prompt

if TYPE_CHECKING:
    from llama_cpp import Llama

TOPICS = [
    "bees", "rivers", "bread", "trains", "maps", "owls", "tea", "bridges",
    "clocks", "volcanoes", "kites", "lighthouses", "glass", "whales", "paper", "bicycles",
]  # fmt: skip


def questions(count: int) -> list[str]:
    return [f"Tell me a short story about {TOPICS[n % len(TOPICS)]}." for n in range(count)]


@dataclass
class Round:
    """One way of answering N questions once."""

    way: str  # "ceiling" or "service"
    size: int
    seconds: float
    tokens: int  # of the replies' text
    texts: list[str]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def text_tokens(llm: Llama, texts: list[str]) -> int:
    return sum(len(llm.tokenize(text.encode(), add_bos=False, special=False)) for text in texts)


# --- the ceiling: llama.cpp's batch API, nothing else ---------------------------------------


def ceiling(llm: Llama, config: LlmConfig, options: Generation, prompts: list[list[int]]) -> Round:
    """Decode every prompt as one sequence of one context, all sequences in each ``llama_decode``."""
    import llama_cpp

    size = len(prompts)
    batch_size = max(config.batch, size)
    params = context_params(llm, size, config.context_tokens, batch_size, config.kv_cache)
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context")
    batch = llama_cpp.llama_batch_init(batch_size, 0, 1)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    samplers = [sampler_chain(llm, options) for _ in prompts]
    replies: list[list[int]] = [[] for _ in prompts]
    try:
        began = time.perf_counter()
        pending = [list(prompt) for prompt in prompts]  # prompt tokens not decoded yet
        positions = [0] * size  # tokens each sequence has decoded
        next_tokens: dict[int, int] = {}  # sequence -> its sampled token, decoded in the next step
        while True:
            # One step: the next token of every sequence writing, then as much prompt as the batch holds.
            entries = [(seq, token, True) for seq, token in next_tokens.items()]  # (sequence, token, logits)
            for seq in range(size):
                chunk = pending[seq][: batch_size - len(entries)]
                pending[seq] = pending[seq][len(chunk) :]
                last = len(chunk) - 1 if not pending[seq] else -1  # the prompt's last token gives logits
                entries += [(seq, token, index == last) for index, token in enumerate(chunk)]
            if not entries:
                break
            rows: dict[int, int] = {}  # sequence -> its row of logits in this step
            for row, (seq, token, logits) in enumerate(entries):
                put(batch, row, token, positions[seq], seq, logits)
                positions[seq] += 1
                if logits:
                    rows[seq] = row
            batch.n_tokens = len(entries)
            decode(ctx, batch)
            next_tokens = {}
            for seq, row in rows.items():
                token = llama_cpp.llama_sampler_sample(samplers[seq], ctx, row)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    continue
                replies[seq].append(token)
                full = positions[seq] + 1 >= config.context_tokens
                if len(replies[seq]) < options.max_tokens and not full:
                    next_tokens[seq] = token
        seconds = time.perf_counter() - began
    finally:
        for sampler in samplers:
            llama_cpp.llama_sampler_free(sampler)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    texts = [llm.detokenize(reply).decode(errors="replace") for reply in replies]
    return Round("ceiling", size, seconds, text_tokens(llm, texts), texts)


def put(batch: Any, index: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[index] = token
    batch.pos[index] = pos
    batch.n_seq_id[index] = 1
    batch.seq_id[index][0] = seq
    batch.logits[index] = logits


def decode(ctx: Any, batch: Any) -> None:
    import llama_cpp

    status = llama_cpp.llama_decode(ctx, batch)
    if status != 0:
        raise RuntimeError(f"llama_decode failed with status {status}")


def sampler_chain(llm: Llama, options: Generation) -> Any:
    """The chain llama-cpp-python builds for a chat completion, as the service's decoder does."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    links = [llama_cpp.llama_sampler_init_penalties(llm.n_vocab(), 64, options.repeat_penalty, 0, 0)]
    if options.temperature <= 0:
        links.append(llama_cpp.llama_sampler_init_greedy())
    else:
        seed = options.seed if options.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        links += [
            llama_cpp.llama_sampler_init_top_k(options.top_k),
            llama_cpp.llama_sampler_init_top_p(options.top_p, 1),
            llama_cpp.llama_sampler_init_min_p(0.05, 1),
            llama_cpp.llama_sampler_init_temp(options.temperature),
            llama_cpp.llama_sampler_init_dist(seed),
        ]
    for link in links:
        llama_cpp.llama_sampler_chain_add(chain, link)
    return chain


# --- the service's decoder, driven as ChatService drives it ---------------------------------


async def service(
    version: ModelVersion, config: LlmConfig, options: Generation, system_prompt: str, asked: list[str]
) -> Round:
    size = len(asked)
    generator = LlamaGenerator(None, version, dataclasses.replace(config, parallel=size))
    try:
        llm = generator.load()  # the model and a fresh decoder, before the clock starts

        async def reply(question: str) -> str:
            budget = generator.context_tokens - options.max_tokens
            messages = await asyncio.to_thread(
                build_prompt, system_prompt, [], question, generator.count_tokens, budget
            )
            return await whole(generator.stream(messages, options))

        began = time.perf_counter()
        texts = await asyncio.gather(*(reply(question) for question in asked))
        seconds = time.perf_counter() - began
        return Round("service", size, seconds, text_tokens(llm, texts), texts)
    finally:
        generator.close()


# --- the run ---------------------------------------------------------------------------------


def summary(rounds: list[Round], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"size": size}
        ceiling_runs = [r for r in rounds if r.size == size and r.way == "ceiling"]
        service_runs = [r for r in rounds if r.size == size and r.way == "service"]
        for way, runs in (("ceiling", ceiling_runs), ("service", service_runs)):
            speeds = [r.tokens_per_s for r in runs]
            row[way] = {
                "tokens_per_s": statistics.median(speeds),
                "min": min(speeds),
                "max": max(speeds),
                "rounds": speeds,
                "tokens": [r.tokens for r in runs],
            }
        # Per round (the two ran back to back), then the median of those ratios.
        ratios = [s.tokens_per_s / c.tokens_per_s for c, s in zip(ceiling_runs, service_runs, strict=True)]
        row["ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        pairs = zip(ceiling_runs, service_runs, strict=True)
        same = sum(a == b for c, s in pairs for a, b in zip(c.texts, s.texts, strict=True))
        row["same_text"] = f"{same}/{size * len(ceiling_runs)}"
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def speed(way: dict[str, Any]) -> str:
        return f"{way['tokens_per_s']:.0f} ({way['min']:.0f}-{way['max']:.0f})"

    print("| sequences | ceiling tok/s | service tok/s | service / ceiling | same text |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        ratio = row["ratio"]
        print(
            f"| {row['size']} | {speed(row['ceiling'])} | {speed(row['service'])} "
            f"| {ratio['median']:.0%} ({ratio['min']:.0%}-{ratio['max']:.0%}) | {row['same_text']} |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    config = settings.llm
    options = dataclasses.replace(settings.generation, max_tokens=args.max_tokens)
    version = configured_model(settings)
    llm = open_gguf(version.gguf_path, n_ctx=64, n_threads=config.threads)

    def count_tokens(text: str) -> int:
        return len(llm.tokenize(text.encode(), add_bos=False, special=False))

    # The prompts the service builds for these questions (no history), tokenized as LlamaGenerator does.
    prompts: dict[int, tuple[list[str], list[list[int]]]] = {}
    for size in sizes:
        asked = questions(size)
        budget = config.context_tokens - options.max_tokens
        messages = [build_prompt(settings.chat.system_prompt, [], q, count_tokens, budget) for q in asked]
        tokens = [chat_tokens(llm, [{"role": m.role, "content": m.content} for m in ms]) for ms in messages]
        prompts[size] = (asked, tokens)

    rounds: list[Round] = []
    for number in range(args.rounds):
        for size in sizes:
            asked, tokens = prompts[size]
            ways = ["ceiling", "service"] if number % 2 == 0 else ["service", "ceiling"]
            for way in ways:
                if way == "ceiling":
                    done = ceiling(llm, config, options, tokens)
                else:
                    done = await service(version, config, options, settings.chat.system_prompt, asked)
                rounds.append(done)
                if not args.json:
                    print(
                        f"round {number + 1} N={size} {way}: {done.tokens} tokens in {done.seconds:.2f} s "
                        f"= {done.tokens_per_s:.0f} tok/s",
                        flush=True,
                    )
    threads = llm.n_threads
    llm.close()

    rows = summary(rounds, sizes)
    machine = {
        "gguf": version.gguf_path,
        "threads": threads,
        "cpus": len(os.sched_getaffinity(0)),
        "context_tokens": config.context_tokens,
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "rounds": args.rounds,
    }
    if args.json:
        print(json.dumps({"machine": machine, "sizes": rows}, indent=2))
    else:
        print()
        print(", ".join(f"{key} {value}" for key, value in machine.items()))
        print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
