"""Several voice notes through whisper together, with the words of one at a time.

Each note still goes through faster-whisper's own ``WhisperModel.transcribe`` in its caller's
thread (VAD, features, prompt, temperature fallback, no-speech check, segments: all its code,
all the same options), but on a copy of the model whose CTranslate2 calls, ``encode`` and
``generate``, go to one worker thread. The worker waits a few milliseconds for the other notes
being transcribed at that moment to reach the same call, then runs them as one batch: one beam
search over their prompts, or one encoder pass over their 30-second windows stacked (whisper pads
every window to 30 s, so a batch needs no padding of its own). A fallback at another temperature
is a call with other options: it is batched only with calls asking for the same ones.

Measured on 2 cores (bench/transcribe_batch.py --calls, CPU seconds a note): the beam search
costs 0.113 s alone, 0.085 s two together, 0.077 s four, 0.090 s eight; the encoder, 0.276 s
alone, costs more in a batch (0.279 s two together, 0.341 s four, 0.370 s eight; each note
brings 54 MB of attention weights a layer, 6 heads of 1500 x 1500), so on the CPU notes are
encoded one at a time (``ENCODE_BATCH``) and only decoded together. The encoder's fixed
30-second window is most of a note's cost, and batching does not shrink it: 8 notes at once
took 1.42x less wall time and 1.26x less CPU than one by one, with the same words for all.

Why not faster-whisper's ``BatchedInferencePipeline``: it batches the 30-second chunks of ONE
recording (and drops the temperature fallback); a voice note is one chunk.

A batch that raises is run again one call at a time, so a bad note fails alone. On a GPU or with
a batch of 1 the model is used as it is.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

# How long the worker waits for the notes being transcribed to reach the same call. Only notes
# in flight are waited for (a lone note never waits). In bench/transcribe_batch.py every decoder
# batch held all the notes sent at once: their decodes queue up behind the encodes.
WINDOW_S = 0.03
IDLE_S = 10.0  # the worker thread ends after this long without a call; the next caller starts one
ENCODE_BATCH = 1  # see above: on the CPU the encoder is cheaper a note at a time


@dataclass
class _Call:
    kind: str  # "encode" or "generate"
    array: Any  # float32 numpy: features [1, 80, 3000] or an encoder output [1, 1500, d]
    prompt: list[int] | None
    options: dict[str, Any]
    result: Future[Any] = field(default_factory=Future)

    def joins(self, other: _Call) -> bool:
        return self.kind == other.kind and self.options == other.options


class WhisperBatcher:
    """The one thread that runs a model's CTranslate2 calls, several notes' at once."""

    def __init__(self, model: Any, max_batch: int, window_s: float = WINDOW_S) -> None:
        self.model = model  # the ctranslate2.models.Whisper
        self.limits = {"encode": min(ENCODE_BATCH, max_batch), "generate": max_batch}
        self.window_s = window_s
        self.sizes: deque[tuple[str, int]] = deque(maxlen=1000)  # recent batches: the tests read it
        self._pending: deque[_Call] = deque()
        self._callers = 0  # notes being transcribed through this batcher now
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closing = False
        # The worker still alive when the interpreter's exit handlers ran aborted the process
        # ("terminate called without an active exception"): it is ended before them, where
        # concurrent.futures ends its own workers.
        _before_exit(_close, weakref.ref(self))

    @contextmanager
    def caller(self) -> Iterator[None]:
        """Around one note's transcription: the worker waits for callers in flight, and no others."""
        with self._changed:
            self._callers += 1
            self._start_worker()
        try:
            yield
        finally:
            with self._changed:
                self._callers -= 1
                self._changed.notify_all()

    def call(self, kind: str, array: Any, prompt: list[int] | None, options: dict[str, Any]) -> Any:
        queued = _Call(kind, array, prompt, options)
        with self._changed:
            self._pending.append(queued)
            self._start_worker()
            self._changed.notify_all()
        return queued.result.result()

    def close(self) -> None:
        """End the worker thread once the calls already queued are answered (a later call starts it again)."""
        with self._changed:
            worker, self._closing = self._worker, True
            self._changed.notify_all()
        if worker is not None:
            worker.join(timeout=30)
        with self._changed:
            self._closing = False

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, daemon=True, name="whisper-batch")
            self._worker.start()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                results = self._run(batch)
            except Exception:
                for one in batch:  # one at a time: each note gets its own result or error
                    try:
                        one.result.set_result(self._run([one])[0])
                    except Exception as error:
                        one.result.set_exception(error)
                continue
            for one, result in zip(batch, results, strict=True):
                one.result.set_result(result)

    def _next_batch(self) -> list[_Call] | None:
        """The next batch; None once idle for IDLE_S (the thread ends, and no longer holds the model)."""
        with self._changed:
            while not self._pending:
                idle = not self._changed.wait(IDLE_S) and not self._pending and not self._callers
                if idle or (self._closing and not self._pending):
                    self._worker = None
                    return None
            first = self._pending[0]
            limit = self.limits[first.kind]
            deadline = time.monotonic() + self.window_s
            while True:
                joining = [call for call in self._pending if call.joins(first)][:limit]
                left = deadline - time.monotonic()
                if len(joining) >= min(limit, self._callers) or left <= 0:
                    break
                self._changed.wait(left)
            for call in joining:
                self._pending.remove(call)
        self.sizes.append((first.kind, len(joining)))
        return joining

    def _run(self, batch: list[_Call]) -> list[Any]:
        import ctranslate2
        import numpy as np

        stacked = batch[0].array if len(batch) == 1 else np.concatenate([call.array for call in batch])
        inputs = ctranslate2.StorageView.from_array(np.ascontiguousarray(stacked))
        if batch[0].kind == "encode":
            # numpy keeps the StorageView alive under the rows it hands out.
            encoded = np.asarray(self.model.encode(inputs, **batch[0].options))
            return [ctranslate2.StorageView.from_array(encoded[i : i + 1]) for i in range(len(batch))]
        prompts = [call.prompt for call in batch]
        return list(self.model.generate(inputs, prompts, **batch[0].options))


def _before_exit(function: Any, *args: Any) -> None:
    """Run ``function`` when the interpreter exits, before the non-daemon threads are joined."""
    register = getattr(threading, "_register_atexit", None)  # since Python 3.9: concurrent.futures uses it
    if register is None:
        import atexit

        atexit.register(function, *args)
    else:
        register(function, *args)


def _close(batcher: weakref.ref[WhisperBatcher]) -> None:
    alive = batcher()
    if alive is not None:
        alive.close()


class _Batched:
    """A ``ctranslate2.models.Whisper`` whose encode and generate go through the batcher."""

    def __init__(self, model: Any, batcher: WhisperBatcher) -> None:
        self._model = model
        self._batcher = batcher

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        import numpy as np

        return self._batcher.call("encode", np.asarray(features), None, {"to_cpu": to_cpu})

    def generate(self, features: Any, prompts: list[list[int]], **options: Any) -> list[Any]:
        import numpy as np

        if len(prompts) != 1:  # faster-whisper asks for one note's window at a time
            return self._model.generate(features, prompts, **options)  # type: ignore[no-any-return]
        return [self._batcher.call("generate", np.asarray(features), prompts[0], options)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def batched_model(model: WhisperModel, max_batch: int) -> tuple[WhisperModel, WhisperBatcher] | None:
    """A copy of ``model`` whose CTranslate2 calls are batched; None where batching does not apply."""
    if max_batch < 2 or model.model.device != "cpu":
        return None
    batcher = WhisperBatcher(model.model, max_batch)
    twin = copy.copy(model)  # the same tokenizer, feature extractor and options; another .model
    twin.model = _Batched(model.model, batcher)
    return twin, batcher
