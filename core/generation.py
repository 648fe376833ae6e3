"""Replies from a GGUF model through llama-cpp-python, on the CPU.

The model file comes from the model registry's active version, checked before
every reply, so a newly promoted GGUF is picked up between requests without a
restart. A version whose file does not load never replaces one that does: the
model already loaded keeps answering, the registry records the version as
broken, and the load is tried again after a back-off (``LoadBackoff``).
``core.model_check.check_gguf`` tries a file in a child process, where a crash of llama.cpp
costs nothing; every load goes through it, the first of a process too (a file
that crashed llama.cpp at start would otherwise crash the bot at every restart,
and the version before it would never be served). A file that passed is
remembered (``core.model_check.CheckedModels``: its path, size, mtime and inode, in a JSON file
under the data dir), so a restart serving the same file starts no child.
Every GGUF is opened by ``core.gguf.open_gguf``. ``llama_cpp`` is imported only inside
functions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr

from core.batching import KV_CACHE_BYTES_PER_VALUE, BatchedDecoder, Job, KvCache, chat_tokens
from core.domain import ChatMessage, ModelVersion
from core.gguf import open_gguf, serving_version
from core.model_check import CHECK_MARK, CheckedModels, ModelUnloadable, default_checked_record, one_line
from core.ports import Generation, ModelRegistry, ServerUnavailable

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)


# What a person is told when no model could be loaded at all (a ServerUnavailable: safe to show).
MODEL_UNAVAILABLE = "the model file does not load"


def answer_in_child(argv: Sequence[str]) -> None:
    """``check_gguf``'s child: load the file, answer one question, print one marked JSON line."""
    path, question, max_tokens = argv[0], argv[1], int(argv[2])
    version = ModelVersion(id=0, name=Path(path).name, gguf_path=path)
    generator = LlamaGenerator(None, version, LlmConfig(context_tokens=512, parallel=1))
    try:
        # Installed directly, not through ``load``: that would check the file in yet another child.
        generator._install(version, *_open_serving(path, generator.config))
    except Exception as error:
        print(CHECK_MARK + json.dumps({"error": f"does not load in llama.cpp ({one_line(error)})"}))
        return
    try:
        messages = [ChatMessage("user", question)]
        answer = asyncio.run(whole(generator.stream(messages, Generation(max_tokens=max_tokens))))
        print(CHECK_MARK + json.dumps({"answer": answer}))
    except Exception as error:
        print(CHECK_MARK + json.dumps({"error": f"failed to answer ({one_line(error)})"}))
    finally:
        generator.close()


async def whole(pieces: AsyncIterator[str]) -> str:
    """A streamed reply in one piece (for checks and scripts that need no streaming)."""
    return "".join([piece async for piece in pieces])


def _open_serving(path: str, config: LlmConfig) -> tuple[Llama, BatchedDecoder]:
    """The model and its batched decoder, as the bots serve it; raises whatever llama.cpp raises."""
    # The model's own context only tokenizes; replies use the decoder's.
    llm = open_gguf(path, n_ctx=64, n_threads=config.threads)
    try:
        return llm, BatchedDecoder(llm, config.parallel, config.context_tokens, config.batch, config.kv_cache)
    except BaseException:
        llm.close()
        raise


@dataclass(frozen=True)
class LoadBackoff:
    """When a version whose file failed to load is tried again: after ``first_s``, doubling up to ``most_s``."""

    first_s: float = 30.0
    most_s: float = 600.0

    def delay(self, failures: int) -> float:
        return float(min(self.first_s * 2 ** (failures - 1), self.most_s))


@dataclass(frozen=True)
class _LoadFailure:
    path: str
    reason: str
    failures: int
    retry_at: float  # on the generator's clock


@dataclass(frozen=True)
class LlmConfig:
    """The replies' model: the ``IRIS_LLM_*`` settings, taken by both generators as they are.

    ``model`` is the GGUF served on first start: "bundled", a .gguf path or "owner/repo:file.gguf"
    on the Hub; after that the model registry decides. With ``url`` set, an OpenAI-compatible
    server writes the replies instead (``core.remote``).
    """

    model: str = "bundled"
    bundled_quant: Literal["f16", "q8_0", "q4_1"] = "f16"
    context_tokens: int = 2048  # per reply being written
    threads: int | None = None  # None: half the cores (llama-cpp-python's default), for batches too
    batch: int = 512
    # Replies decoded together in one llama.cpp context (continuous batching, core.batching); each
    # holds context_tokens of KV cache. Beyond it, replies wait round-robin per person. 0 (the
    # default): chosen from this machine when the settings are read (``machine_parallel``).
    parallel: Annotated[int, Field(ge=0, le=64)] = 0
    # The KV cache's element type (core.batching): q8_0 takes about half of f16's memory.
    kv_cache: KvCache = "q8_0"
    url: str | None = None  # llama-server, llama_cpp.server, vLLM, SGLang or Ollama (its /v1 base URL)
    api_key: SecretStr | None = None
    served_model: str | None = None  # a fixed name to request; None: the registry's version name

    def __post_init__(self) -> None:
        if self.parallel == 0:
            # A frozen dataclass sets its own field this way; the value is final from here on.
            object.__setattr__(self, "parallel", self._parallel_for_this_machine())

    def _parallel_for_this_machine(self) -> int:
        if self.url is not None:
            return REMOTE_PARALLEL  # the server's machine decides how fast it goes
        threads = self.threads or max((os.cpu_count() or 1) // 2, 1)  # as llama-cpp-python chooses
        if self.model == "bundled":
            model_bytes = BUNDLED_MODEL_BYTES
            slot_bytes = BUNDLED_KV_BYTES_PER_TOKEN * self.context_tokens
        else:
            path = Path(self.model).expanduser()
            model_bytes = path.stat().st_size if path.is_file() else 0
            # Another model's KV cache is not known before it loads: assumed as large against its
            # weights as the bundled model's, which overestimates it for most larger models.
            slot_bytes = max(model_bytes * BUNDLED_KV_BYTES_PER_TOKEN // BUNDLED_MODEL_BYTES, 1)
            slot_bytes *= self.context_tokens
        slot_bytes = int(slot_bytes * KV_CACHE_BYTES_PER_VALUE[self.kv_cache] / 2)  # f16's above
        return machine_parallel(threads, available_memory(), model_bytes, slot_bytes)


# IRIS_LLM_PARALLEL's default. bench/ceiling.py measured llama.cpp's batched decoding of the
# bundled model on a 2-core machine (one decoding thread; README, "Decoding ceiling"): tokens per
# second rose with every doubling of the replies decoded together up to SLOTS_PER_THREAD, and by
# less than 15 % beyond it.
SLOTS_PER_THREAD = 8
MOST_SLOTS = 16  # the most the bench measures
REMOTE_PARALLEL = 4  # replies sent to a server (IRIS_LLM_URL) at once
# The bundled SmolLM2-135M: its f16 export (the largest of its files), and its f16 KV cache per
# token of context (30 layers x 3 KV heads x 64 dimensions, keys and values, 2 bytes each).
BUNDLED_MODEL_BYTES = 271_000_000
BUNDLED_KV_BYTES_PER_TOKEN = 30 * 3 * 64 * 2 * 2


def machine_parallel(threads: int, available_bytes: int | None, model_bytes: int, slot_bytes: int) -> int:
    """How many replies to decode together: ``SLOTS_PER_THREAD`` per decoding thread, if memory allows.

    The model and every slot's KV cache (``slot_bytes`` each) take at most half of the memory
    available now (``None``: not known, no limit); at least 1 slot, at most ``MOST_SLOTS``.
    """
    slots = min(SLOTS_PER_THREAD * threads, MOST_SLOTS)
    if available_bytes is not None:
        slots = min(slots, (available_bytes // 2 - model_bytes) // max(slot_bytes, 1))
    return max(slots, 1)


def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class LlamaGenerator:
    """One llama.cpp model, writing up to ``config.parallel`` replies together.

    Each ``stream`` is one job of the model's ``BatchedDecoder``, whose thread
    writes every reply in progress together. A newly promoted model gets a decoder of
    its own; the old one finishes the replies it is writing, then is freed. A
    promoted model whose file does not load leaves the old one serving (see
    ``_try_to_serve``), and at a fresh start the version active before it
    serves; ``clock`` times the back-off between tries. ``checked_record`` is
    where the files that passed ``check_gguf`` are remembered (``CheckedModels``;
    the bots pass ``<data_dir>/checked-models.json``, every process of a deployment
    sees it); None: the user's cache.
    """

    def __init__(
        self,
        registry: ModelRegistry | None,
        fallback: ModelVersion | None = None,
        config: LlmConfig | None = None,
        backoff: LoadBackoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        checked_record: Path | None = None,
    ) -> None:
        if registry is None and fallback is None:
            raise ValueError("a generator needs a model registry or a model")
        self.registry = registry
        self.fallback = fallback
        self.config = config or LlmConfig()
        self._llm: Llama | None = None
        self._decoder: BatchedDecoder | None = None
        self._loaded: ModelVersion | None = None
        self._lock = threading.Lock()
        self.backoff = backoff or LoadBackoff()
        self.clock = clock
        self._failure: _LoadFailure | None = None  # the last version that failed to load, until one loads
        self.checked = CheckedModels(checked_record or default_checked_record())
        # Where a reply's prompt is tokenized (and a promoted model loaded): a pool of its own,
        # so a crowd waiting for a load never takes the threads that storage calls use.
        self._preparing = ThreadPoolExecutor(2, thread_name_prefix="llama-prompt")

    @property
    def model_name(self) -> str:
        return self._loaded.name if self._loaded else self._wanted().name

    @property
    def context_tokens(self) -> int:
        return self.config.context_tokens

    def _wanted(self) -> ModelVersion:
        return serving_version(self.registry, self.fallback)

    def load(self) -> Llama:
        """Return the active model, loading it (or swapping to a newly promoted one) first.

        Raise ``ServerUnavailable`` when no model is loaded and the wanted one does not load.
        """
        return self._current()[0]

    def _current(self) -> tuple[Llama, BatchedDecoder]:
        wanted = self._wanted()
        with self._lock:
            if self._llm is None or self._loaded is None or self._loaded.gguf_path != wanted.gguf_path:
                self._try_to_serve(wanted)
            else:
                self._loaded = wanted  # the same file, perhaps registered under another name
            if self._llm is None or self._decoder is None:
                raise ServerUnavailable(MODEL_UNAVAILABLE)
            return self._llm, self._decoder

    def _try_to_serve(self, wanted: ModelVersion) -> None:
        """Load ``wanted`` in place of the model serving now; if it fails, that one goes on serving.

        A failed version is not tried again on every reply (each try holds the
        lock that every reply takes) but after a back-off, so a repaired file is
        picked up without a restart.
        """
        failed = self._failure
        if failed is not None and failed.path == wanted.gguf_path and self.clock() < failed.retry_at:
            return
        log.info("loading %s from %s", wanted.name, wanted.gguf_path)
        try:
            # A file that crashes llama.cpp natively would end this process: the model serving
            # in it, or at a first load the whole bot at every restart. It proves itself in a
            # child process first, unless this very file has done so before.
            self.checked.ensure(wanted.gguf_path)
            loaded = _open_serving(wanted.gguf_path, self.config)
        except Exception as error:
            self._note_failure(wanted, error)
            if self._llm is None:
                self._serve_previous(wanted)
            return
        if failed is not None:
            log.warning("model %s loads now and serves", wanted.name)
        self._failure = None
        self._install(wanted, *loaded)
        self._report(wanted, None)

    def _serve_previous(self, broken: ModelVersion) -> None:
        """Nothing loaded and the active version broken (a fresh start): serve the one active before it.

        ``broken`` is tried again after its back-off, and takes over once it loads.
        """
        try:
            previous = self.registry.previous_model() if self.registry is not None else None
            if previous is None or previous.gguf_path == broken.gguf_path:
                return
            self.checked.ensure(previous.gguf_path)  # it may have been damaged since it served
            loaded = _open_serving(previous.gguf_path, self.config)
        except Exception as error:
            log.error("no earlier version could be served in place of %s: %s", broken.name, one_line(error))
            return
        log.warning(
            "serving %s, the version active before %s, until %s loads", previous.name, broken.name, broken.name
        )
        self._install(previous, *loaded)

    def _install(self, version: ModelVersion, llm: Llama, decoder: BatchedDecoder) -> None:
        old = (self._llm, self._decoder)
        self._llm, self._decoder, self._loaded = llm, decoder, version
        if old[0] is not None and old[1] is not None:
            threading.Thread(target=_retire, args=old, name="llama-retire", daemon=True).start()

    def _note_failure(self, wanted: ModelVersion, error: Exception) -> None:
        reason = str(error)
        if not isinstance(error, ModelUnloadable):
            reason = f"{Path(wanted.gguf_path).name} does not load in llama.cpp ({one_line(error)})"
        before = self._failure
        again = before is not None and before.path == wanted.gguf_path
        failures = before.failures + 1 if before is not None and again else 1
        delay = self.backoff.delay(failures)
        self._failure = _LoadFailure(wanted.gguf_path, reason, failures, self.clock() + delay)
        serving = self._loaded.name if self._llm is not None and self._loaded else None
        # Logged once per broken file, not at every try: a try comes at most once per back-off.
        log.log(
            logging.DEBUG if again else logging.ERROR,
            "model %s cannot be served: %s; %s; trying again in %.0f s, then less often (at most every %.0f s)",
            wanted.name,
            reason,
            f"{serving} goes on answering" if serving else "no model answers until one loads",
            delay,
            self.backoff.most_s,
        )
        self._report(wanted, reason)

    def _report(self, version: ModelVersion, reason: str | None) -> None:
        """Record in the registry whether ``version`` loads, where every process and the CLI see it."""
        if self.registry is None or version.load_error == reason:
            return
        try:
            self.registry.report_model_load(version.name, reason)
        except Exception:  # the model serving matters more than the note
            log.exception("could not record whether model %s loads", version.name)

    def close(self) -> None:
        with self._lock:
            if self._llm is not None and self._decoder is not None:
                _retire(self._llm, self._decoder)
            self._llm = self._decoder = None

    def count_tokens(self, text: str) -> int:
        # The loaded model's tokenizer, without asking the registry each time:
        # a prompt is counted message by message.
        llm = self._llm or self.load()
        return len(llm.tokenize(text.encode(), add_bos=False, special=False))

    async def stream(self, messages: Sequence[ChatMessage], options: Generation) -> AsyncGenerator[str, None]:
        """One job of the decoder: its thread hands each piece straight to the event loop.

        Only the short preparation (which model serves, the prompt's tokens; a load
        after a promotion) runs in a thread, one of the generator's few: no thread
        waits on a reply while it is written.
        """
        loop = asyncio.get_running_loop()
        tokens, decoder = await loop.run_in_executor(self._preparing, self._prepare, messages)
        pieces: asyncio.Queue[str | _End] = asyncio.Queue()

        def hand(item: str | _End) -> None:  # on the decoder's thread
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:  # the event loop has closed: nobody listens any more
                job.cancelled = True

        job = Job(tokens, options, on_piece=hand, on_end=lambda error: hand(_End(error)))
        decoder.submit(job)
        try:
            while not isinstance(item := await pieces.get(), _End):
                yield item
            if item.error is not None:
                raise item.error
        finally:
            job.cancelled = True  # the caller stopped listening: free the slot at the next token

    def _prepare(self, messages: Sequence[ChatMessage]) -> tuple[list[int], BatchedDecoder]:
        """The prompt's tokens for the model serving now (loading it first if it changed)."""
        llm, decoder = self._current()
        return chat_tokens(llm, [{"role": m.role, "content": m.content} for m in messages]), decoder


def _retire(llm: Llama, decoder: BatchedDecoder) -> None:
    decoder.close()  # waits for the replies it is writing
    llm.close()
