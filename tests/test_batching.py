"""Several replies decoded together in one llama.cpp context, on the bundled model.

What a person would notice if batching went wrong is a reply to someone else's
question, or a reply that never ends; what an operator would notice is that
nothing got faster. The checks do not compare words (greedy text can flip
between CPUs and between batch sizes): a reply must be likelier under its own
prompt than under any other prompt of the batch.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.batching import BatchedDecoder, Job, KvCache, chat_tokens
from core.domain import ChatMessage, ModelVersion
from core.generation import (
    BUNDLED_KV_BYTES_PER_TOKEN,
    BUNDLED_MODEL_BYTES,
    MOST_SLOTS,
    SLOTS_PER_THREAD,
    LlamaGenerator,
    LlmConfig,
    machine_parallel,
    whole,
)
from core.gguf import open_gguf
from core.ports import Generation

QUESTIONS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "How do I boil an egg?",
    "Name three planets of the solar system.",
)
GREEDY = Generation(max_tokens=32, temperature=0.0)


@pytest.fixture(scope="module")
def llm(served_gguf: Path) -> Iterator[object]:
    model = open_gguf(served_gguf, n_ctx=1024, logits_all=True)
    yield model
    model.close()


def _prompt(llm: object, question: str) -> list[int]:
    return chat_tokens(llm, [{"role": "user", "content": question}])  # type: ignore[arg-type]


class Reply:
    """One job's pieces, collected on the decoding thread."""

    def __init__(self, tokens: list[int], options: Generation = GREEDY) -> None:
        self.pieces: list[str] = []
        self.started = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.job = Job(tokens, options, self._piece, self._end)

    def _piece(self, piece: str) -> None:
        self.pieces.append(piece)
        self.started.set()

    def _end(self, error: BaseException | None) -> None:
        self.error = error
        self.ended.set()

    @property
    def text(self) -> str:
        assert self.ended.wait(120), "the reply never ended"
        assert self.error is None, self.error
        return "".join(self.pieces)


def _mean_logprob(llm: object, prompt: list[int], reply: str) -> float:
    """Mean log-probability per token of ``reply`` after ``prompt`` (teacher-forced)."""
    import numpy as np

    model = llm  # llama_cpp.Llama with logits_all
    answer = model.tokenize(reply.encode(), add_bos=False, special=False)  # type: ignore[attr-defined]
    model.reset()  # type: ignore[attr-defined]
    model.eval(prompt + answer)  # type: ignore[attr-defined]
    logits = np.asarray(model.scores[len(prompt) - 1 : len(prompt) + len(answer) - 1])  # type: ignore[attr-defined]
    logits = logits - logits.max(axis=1, keepdims=True)
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(np.mean([logprobs[k, token] for k, token in enumerate(answer)]))


@pytest.mark.parametrize("kv_cache", ["f16", "q8_0"])
def test_replies_decoded_together_each_answer_their_own_question(llm: object, kv_cache: KvCache) -> None:
    prompts = [_prompt(llm, question) for question in QUESTIONS]
    decoder = BatchedDecoder(llm, parallel=4, context_tokens=512, batch=256, kv_cache=kv_cache)  # type: ignore[arg-type]
    try:
        replies = [Reply(tokens) for tokens in prompts]
        for reply in replies:
            decoder.submit(reply.job)
        texts = [reply.text for reply in replies]
        together = decoder.stats.most_sequences
    finally:
        decoder.close()

    assert together == 4  # all four were in one llama_decode at least once
    for own, text in enumerate(texts):
        assert text.strip(), f"no reply to {QUESTIONS[own]!r}"
        fits = [_mean_logprob(llm, prompt, text) for prompt in prompts]
        assert max(range(len(fits)), key=fits.__getitem__) == own, (QUESTIONS[own], text, fits)
        assert all(math.isfinite(fit) for fit in fits)


def test_more_replies_than_slots_wait_and_every_one_ends(llm: object) -> None:
    decoder = BatchedDecoder(llm, parallel=2, context_tokens=512, batch=64)  # type: ignore[arg-type]
    try:
        short = Generation(max_tokens=8, temperature=0.0)
        replies = [Reply(_prompt(llm, QUESTIONS[n % len(QUESTIONS)]), short) for n in range(5)]
        for reply in replies:
            decoder.submit(reply.job)
        texts = [reply.text for reply in replies]
        stats = decoder.stats
    finally:
        decoder.close()
    assert all(text.strip() for text in texts)
    assert stats.most_sequences == 2 and stats.replies == 5


def test_a_cancelled_reply_frees_its_slot_for_the_next(llm: object) -> None:
    decoder = BatchedDecoder(llm, parallel=1, context_tokens=512, batch=256)  # type: ignore[arg-type]
    try:
        long = Reply(_prompt(llm, "Tell me a long story about a dragon."), Generation(max_tokens=400))
        decoder.submit(long.job)
        assert long.started.wait(60)
        long.job.cancelled = True
        nxt = Reply(_prompt(llm, QUESTIONS[0]))
        decoder.submit(nxt.job)
        assert nxt.text.strip()
        assert long.ended.is_set() and len(long.pieces) < 400
    finally:
        decoder.close()


def test_a_follow_up_evaluates_only_its_new_tokens(llm: object) -> None:
    decoder = BatchedDecoder(llm, parallel=2, context_tokens=1024, batch=256)  # type: ignore[arg-type]
    try:
        history = [{"role": "user", "content": "My name is Ada and I keep bees in Lyon."}]
        first = Reply(chat_tokens(llm, history))  # type: ignore[arg-type]
        decoder.submit(first.job)
        history.append({"role": "assistant", "content": first.text.strip()})
        other = Reply(_prompt(llm, QUESTIONS[1]))  # another chat uses the model in between
        decoder.submit(other.job)
        assert other.text
        history.append({"role": "user", "content": "Where do I keep my bees?"})
        follow_up = Reply(chat_tokens(llm, history))  # type: ignore[arg-type]
        decoder.submit(follow_up.job)
        assert follow_up.text.strip()
    finally:
        decoder.close()
    first_prompt = len(first.job.tokens)
    assert follow_up.job.reused >= first_prompt, (follow_up.job.reused, first_prompt)
    assert other.job.reused < first_prompt  # it did not take the conversation's slot


def test_a_failing_decode_fails_its_reply_and_the_decoder_goes_on(llm: object) -> None:
    decoder = BatchedDecoder(llm, parallel=2, context_tokens=512, batch=256)  # type: ignore[arg-type]
    try:
        broken = Reply([1, 10**7])  # a token id the model does not have: llama_decode refuses the batch
        decoder.submit(broken.job)
        assert broken.ended.wait(60)
        assert isinstance(broken.error, RuntimeError)
        after = Reply(_prompt(llm, QUESTIONS[0]))
        decoder.submit(after.job)
        assert after.text.strip()
    finally:
        decoder.close()


KV_MEMORY = """
import sys
from core.batching import BatchedDecoder
from core.gguf import open_gguf

def resident_mb():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024

llm = open_gguf(sys.argv[1], n_ctx=64, n_threads=1)
before = resident_mb()
decoder = BatchedDecoder(llm, 8, 2048, 512, kv_cache=sys.argv[2])
print(resident_mb() - before)
"""


def test_an_8_bit_kv_cache_takes_about_half_the_memory(served_gguf: Path) -> None:
    """What IRIS_LLM_KV_CACHE saves, as the process's resident memory shows it: 8 slots of 2,048
    tokens of the bundled model (f16 377 MB of KV cache, q8_0 201 MB); each in its own process."""
    import subprocess
    import sys

    def grown_mb(kv_cache: str) -> float:
        run = [sys.executable, "-c", KV_MEMORY, str(served_gguf), kv_cache]
        return float(subprocess.run(run, capture_output=True, text=True, check=True).stdout.split()[-1])

    f16, q8 = grown_mb("f16"), grown_mb("q8_0")
    assert f16 > 300, f16  # the f16 cache is really touched, so the comparison means something
    assert q8 < 0.65 * f16, (q8, f16)
    assert LlmConfig().kv_cache == "q8_0"  # the default


def test_a_model_that_refuses_an_8_bit_kv_cache_is_served_with_f16(
    llm: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """llama.cpp returns no context where q8_0 cannot hold a model's heads: the decoder opens with
    f16 and says so, rather than the model failing to load."""
    import llama_cpp

    opened = llama_cpp.llama_init_from_model
    asked: list[int] = []

    def refusing_q8(model: object, params: object) -> object:
        asked.append(params.type_k)  # type: ignore[attr-defined]
        return None if params.type_k == llama_cpp.GGML_TYPE_Q8_0 else opened(model, params)  # type: ignore[attr-defined]

    monkeypatch.setattr(llama_cpp, "llama_init_from_model", refusing_q8)
    decoder = BatchedDecoder(llm, parallel=2, context_tokens=256, batch=64, kv_cache="q8_0")  # type: ignore[arg-type]
    try:
        reply = Reply(_prompt(llm, QUESTIONS[0]))
        decoder.submit(reply.job)
        assert reply.text.strip()
    finally:
        decoder.close()
    assert asked == [llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_F16]
    assert "using f16" in caplog.text


# --- how many replies are decoded together when IRIS_LLM_PARALLEL is not set --------------------

GB = 1 << 30
BUNDLED_SLOT = BUNDLED_KV_BYTES_PER_TOKEN * 2048  # the bundled model's KV cache at 2,048 tokens


async def test_replies_being_written_hold_no_thread_each(served_gguf: Path) -> None:
    """Eight replies at once, twice the slots: the decoder's one thread writes them and hands each
    piece to the event loop; no thread waits on a reply (a crowd would need one per person)."""
    version = ModelVersion(id=0, name="served", gguf_path=str(served_gguf))
    generator = LlamaGenerator(None, version, LlmConfig(context_tokens=1024, parallel=4))
    await asyncio.to_thread(generator.load)
    before = threading.active_count()
    streams = [generator.stream([ChatMessage("user", question)], GREEDY) for question in QUESTIONS * 2]
    try:
        firsts = await asyncio.gather(*(anext(stream) for stream in streams))
        during = threading.active_count()
        rests = await asyncio.gather(*(whole(stream) for stream in streams))
    finally:
        for stream in streams:
            await stream.aclose()
        generator.close()
    assert during - before <= 2, f"{during - before} threads for 8 replies"  # the prompts' pool, at most
    assert all((first + rest).strip() for first, rest in zip(firsts, rests, strict=True))


def test_the_default_grows_with_the_decoding_threads_up_to_the_most_measured() -> None:
    def slots(threads: int) -> int:
        return machine_parallel(threads, 64 * GB, BUNDLED_MODEL_BYTES, BUNDLED_SLOT)

    assert slots(1) == SLOTS_PER_THREAD
    assert slots(2) == min(2 * SLOTS_PER_THREAD, MOST_SLOTS)
    assert slots(32) == MOST_SLOTS


def test_the_default_keeps_the_model_and_its_slots_within_half_the_memory_available() -> None:
    # 3 GB available: 1.5 GB for a 1 GB model and slots of 100 MB each.
    assert machine_parallel(4, 3 * GB, 1 * GB, 100 << 20) == 5
    assert machine_parallel(4, 2 * GB, 1 * GB, 100 << 20) == 1  # nothing left: still one reply at a time
    assert machine_parallel(1, None, 1 * GB, 100 << 20) == SLOTS_PER_THREAD  # memory not known: no limit


def test_settings_choose_the_default_from_the_machine_and_iris_llm_parallel_overrides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bots.settings import Settings
    from core import generation

    monkeypatch.delenv("IRIS_LLM_PARALLEL", raising=False)
    monkeypatch.delenv("IRIS_LLM_THREADS", raising=False)
    monkeypatch.delenv("IRIS_LLM_MODEL", raising=False)
    monkeypatch.setattr(generation, "available_memory", lambda: 24 * GB)

    def slots(cores: int, **env: str) -> int:
        monkeypatch.setattr(generation.os, "cpu_count", lambda: cores)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings(_env_file=None).llm.parallel  # type: ignore[call-arg]

    assert slots(2) == SLOTS_PER_THREAD  # one decoding thread: half the cores, as llama-cpp-python
    assert slots(4) == min(2 * SLOTS_PER_THREAD, MOST_SLOTS)
    assert slots(4, IRIS_LLM_THREADS="1") == SLOTS_PER_THREAD
    assert slots(4, IRIS_LLM_PARALLEL="3") == 3
    monkeypatch.delenv("IRIS_LLM_PARALLEL")

    # A 7 GB model file on a machine with 8 GB available: one reply at a time.
    big = tmp_path / "big.gguf"
    with big.open("wb") as file:
        file.truncate(7 * GB)  # sparse: takes no disk
    monkeypatch.setattr(generation, "available_memory", lambda: 8 * GB)
    assert slots(16, IRIS_LLM_MODEL=str(big)) == 1
