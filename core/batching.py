"""Several replies decoded together in one llama.cpp context (continuous batching).

A small model on a few CPU cores is bound by memory bandwidth when it decodes
one sequence: every step reads all the weights to make one token. One
``llama_decode`` over a batch that holds the next token of N sequences reads
them once for N tokens. This is how llama.cpp's own server serves parallel
slots; here it runs inside the bot process, on one thread that owns the context:

- each reply being written holds a slot (a llama.cpp sequence id, with its own
  part of the KV cache); replies beyond ``parallel`` wait for a free slot;
- every step decodes the next token of every slot that is generating, plus as
  much of the newly admitted prompts as fits in the batch;
- a slot keeps what its KV cache holds when a reply ends, and a new prompt goes
  to the free slot that already holds its prefix (``_admit``), so a follow-up in
  a conversation evaluates only its new tokens.

``llama_cpp`` is imported only inside functions; the ``Llama`` object passed in
comes from ``core.gguf.open_gguf``.
"""

from __future__ import annotations

import codecs
import itertools
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from core.ports import Generation

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

# What llama-cpp-python's own sampling uses (Llama._init_sampler) for a chat completion.
_LAST_N_PENALTY = 64
_MIN_P = 0.05


KvCache = Literal["f16", "q8_0"]
# ggml's element types for the KV cache. q8_0 keeps keys and values in 8 bits (34 bytes for 32):
# about half of f16's memory, for the bundled model's 8 slots of 2,048 tokens 377 MB -> 201 MB.
# llama.cpp quantizes the V cache only with flash attention.
KV_CACHE_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8}
KV_CACHE_BYTES_PER_VALUE = {"f16": 2.0, "q8_0": 34 / 32}


def context_params(llm: Llama, sequences: int, context_tokens: int, batch: int, kv_cache: KvCache) -> Any:
    """llama.cpp context parameters for ``sequences`` replies of ``context_tokens`` each."""
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = context_tokens * sequences
    params.n_batch = params.n_ubatch = batch
    params.n_seq_max = sequences
    params.kv_unified = False  # each sequence its own context_tokens of KV cache
    # Batches use as many threads as single tokens (llama-cpp-python: half the
    # cores): whisper transcribes beside the decoder, and llama.cpp's threads
    # wait for each other at every step, so a thread that loses its core to
    # whisper stalls the batch (measured here: 4 replies 3.7 s with one thread,
    # 14.8 s with two while another process ran).
    params.n_threads = params.n_threads_batch = llm.n_threads
    params.type_k = params.type_v = KV_CACHE_TYPES[kv_cache]
    if kv_cache != "f16":
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    return params


@dataclass(eq=False)
class Job:
    """One reply to write. ``on_piece`` and ``on_end`` are called on the decoding thread."""

    tokens: list[int]
    options: Generation
    on_piece: Callable[[str], None]
    on_end: Callable[[BaseException | None], None]
    cancelled: bool = False  # set from any thread: the reply stops at its next token
    reused: int = 0  # prompt tokens found already evaluated in the slot's KV cache


@dataclass
class DecoderStats:
    steps: int = 0  # llama_decode calls
    tokens: int = 0  # tokens decoded, prompts included
    replies: int = 0  # replies ended
    most_sequences: int = 0  # the most sequences that got a token in one step


@dataclass(eq=False)
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # the tokens this sequence's KV cache holds
    last_used: int = 0
    job: Job | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    next_token: int | None = None  # sampled, to be decoded in the next step
    produced: int = 0
    sampler: Any = None  # a llama.cpp sampler chain, freed when the reply ends
    text: Any = None  # an incremental UTF-8 decoder: a character may span tokens


class BatchedDecoder:
    """Decodes up to ``parallel`` replies together; ``submit`` from any thread."""

    def __init__(
        self, llm: Llama, parallel: int, context_tokens: int, batch: int, kv_cache: KvCache = "q8_0"
    ) -> None:
        import llama_cpp

        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.llm = llm
        self.context_tokens = context_tokens  # per sequence
        self.batch_size = max(batch, parallel)
        params = context_params(llm, parallel, context_tokens, self.batch_size, kv_cache)
        self._ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self._ctx and kv_cache != "f16":
            # A model whose attention heads do not split into q8_0's blocks of 32 values.
            log.warning("llama.cpp refused a %s KV cache for this model: using f16", kv_cache)
            params = context_params(llm, parallel, context_tokens, self.batch_size, "f16")
            self._ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context for batched decoding")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._batch = llama_cpp.llama_batch_init(self.batch_size, 0, 1)
        self._slots = [_Slot(seq) for seq in range(parallel)]
        self._waiting: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._uses = itertools.count(1)
        self.stats = DecoderStats()
        self._thread = threading.Thread(target=self._run, name="llama-batch", daemon=True)
        self._thread.start()

    @property
    def parallel(self) -> int:
        return len(self._slots)

    def submit(self, job: Job) -> None:
        if len(job.tokens) >= self.context_tokens:
            raise ValueError(f"a prompt of {len(job.tokens)} tokens does not fit {self.context_tokens}")
        with self._wake:
            if self._closing:
                raise RuntimeError("the decoder is closed")
            self._waiting.append(job)
            self._wake.notify()

    def close(self) -> None:
        """Finish the replies in progress, refuse new ones, then free the context."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    # --- the decoding thread ----------------------------------------------------

    def _run(self) -> None:
        import llama_cpp

        try:
            while True:
                try:
                    if not self._step():
                        return
                except Exception as error:  # the replies being written fail; the decoder goes on
                    log.exception("batched decoding failed")
                    for slot in self._busy():
                        self._forget(slot)
                        self._finish(slot, error)
        finally:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)

    def _busy(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.job is not None]

    def _step(self) -> bool:
        """Admit, decode one batch, sample; return False once closed and idle."""
        with self._wake:
            while not self._waiting and not self._busy():
                if self._closing:
                    return False
                self._wake.wait()
            while self._waiting and any(slot.job is None for slot in self._slots):
                self._admit(self._waiting.popleft())
        for slot in self._busy():
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot, None)
        busy = self._busy()
        if not busy:
            return True
        outputs = self._fill_batch(busy)
        self.stats.steps += 1
        self.stats.tokens += self._batch.n_tokens
        self.stats.most_sequences = max(self.stats.most_sequences, len({slot.seq for slot, _ in outputs}))
        self._decode()
        for slot, index in outputs:
            self._sample(slot, index)
        return True

    def _admit(self, job: Job) -> None:
        """Give the job the free slot where it gains most and destroys least.

        Reusing ``keep`` evaluated tokens saves that much work, and whatever else
        the slot holds is lost for the conversation it belonged to: the best
        slot has the most ``keep - lost`` (an empty slot scores 0, so a new chat
        does not take a conversation's slot for the sake of a shared system
        prompt), and among equals the one used longest ago.
        """
        import llama_cpp

        def gain(slot: _Slot) -> tuple[int, int]:
            keep = _common_prefix(slot.cached, job.tokens)
            return keep - (len(slot.cached) - keep), -slot.last_used

        slot = max((slot for slot in self._slots if slot.job is None), key=gain)
        # At least the prompt's last token is evaluated again: its logits give the first reply token.
        keep = min(_common_prefix(slot.cached, job.tokens), len(job.tokens) - 1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, keep, -1):
            self._forget(slot)
            keep = 0
        slot.cached = slot.cached[:keep]
        slot.pending = job.tokens[keep:]
        job.reused = keep
        slot.job, slot.next_token, slot.produced = job, None, 0
        slot.last_used = next(self._uses)
        slot.sampler = _sampler(self.llm, job.options)
        slot.text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        log.debug("slot %d: %d prompt tokens, %d reused", slot.seq, len(job.tokens), keep)

    def _fill_batch(self, busy: Sequence[_Slot]) -> list[tuple[_Slot, int]]:
        """Put every generating slot's next token and as much prompt as fits into the batch."""
        batch = self._batch
        count = 0
        outputs: list[tuple[_Slot, int]] = []

        def add(slot: _Slot, token: int, logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = len(slot.cached)
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = slot.seq
            batch.logits[count] = logits
            slot.cached.append(token)
            if logits:
                outputs.append((slot, count))
            count += 1

        for slot in busy:
            if slot.next_token is not None:
                add(slot, slot.next_token, True)
                slot.next_token = None
        for slot in busy:
            room = self.batch_size - count
            if not slot.pending or room <= 0:
                continue
            chunk, slot.pending = slot.pending[:room], slot.pending[room:]
            for position, token in enumerate(chunk):
                add(slot, token, logits=not slot.pending and position == len(chunk) - 1)
        batch.n_tokens = count
        return outputs

    def _decode(self) -> None:
        import llama_cpp

        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")

    def _sample(self, slot: _Slot, index: int) -> None:
        import llama_cpp

        job = slot.job
        assert job is not None
        token = llama_cpp.llama_sampler_sample(slot.sampler, self._ctx, index)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, None)
            return
        piece = slot.text.decode(self.llm.detokenize([token]))
        if piece:
            job.on_piece(piece)
        slot.produced += 1
        full = len(slot.cached) + 1 >= self.context_tokens
        if slot.produced >= job.options.max_tokens or full or job.cancelled:
            self._finish(slot, None)
        else:
            slot.next_token = token

    def _finish(self, slot: _Slot, error: BaseException | None) -> None:
        job = slot.job
        slot.job, slot.pending, slot.next_token = None, [], None
        if slot.sampler is not None:
            import llama_cpp

            llama_cpp.llama_sampler_free(slot.sampler)
            slot.sampler = None
        if job is None:
            return
        self.stats.replies += 1
        try:
            if error is None and slot.text is not None:
                rest = slot.text.decode(b"", final=True)
                if rest:
                    job.on_piece(rest)
            job.on_end(error)
        except Exception:  # a listener's failure must not stop the other replies
            log.exception("a reply's listener failed")

    def _forget(self, slot: _Slot) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        slot.cached = []


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


def _sampler(llm: Llama, options: Generation) -> Any:
    """A sampler chain as llama-cpp-python builds one for ``create_chat_completion`` (Llama._init_sampler)."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    # llama-cpp-python's binding of llama_sampler_init_penalties takes n_vocab first.
    add(llama_cpp.llama_sampler_init_penalties(llm.n_vocab(), _LAST_N_PENALTY, options.repeat_penalty, 0, 0))
    if options.temperature <= 0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    add(llama_cpp.llama_sampler_init_top_k(options.top_k))
    add(llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    add(llama_cpp.llama_sampler_init_min_p(_MIN_P, 1))
    add(llama_cpp.llama_sampler_init_temp(options.temperature))
    seed = options.seed if options.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED  # default: random
    add(llama_cpp.llama_sampler_init_dist(seed))
    return chain


def chat_tokens(
    llm: Llama, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
) -> list[int]:
    """The prompt for ``messages`` in the model's own chat template, as tokens.

    Only the template's own markup becomes control tokens: a person who writes
    ``<|im_end|>`` or ``<start_of_turn>`` gets those characters read as text, not a
    turn of their own making. The template is rendered with a mark in place of
    each message's content; the markup around the marks is tokenized with special
    tokens parsed, and the runs of text between control tokens (markup text and
    content together, cut where llama.cpp itself would cut them) with none parsed.
    """
    template = llm.metadata.get("tokenizer.chat_template")
    render = _formatter(
        template or _CHATML,
        _token_text(llm, llm.token_bos()),
        _token_text(llm, llm.token_eos()),
        add_generation_prompt,
    )
    # Without a template of its own, the vocabulary decides on a BOS (as llama-cpp-python's ChatML does).
    tokens = [] if template else llm.tokenize(b"", add_bos=True, special=False)
    text = ""
    for part in [*_parts(llm, render, messages), -1]:
        if isinstance(part, str):
            text += part
            continue
        if text:
            tokens += llm.tokenize(text.encode(), add_bos=False, special=False)
            text = ""
        if part >= 0:
            tokens.append(part)
    return tokens


def _parts(llm: Llama, render: Any, messages: Sequence[Mapping[str, Any]]) -> list[str | int]:
    """The rendered prompt as text and control token ids, the control tokens only from the markup."""

    def marked(pad: str) -> str:
        # An empty content stays empty: a template may treat it differently.
        marks = [
            {**m, "content": f"{pad}\ue000{n}\ue001{pad}" if m["content"] else ""}
            for n, m in enumerate(messages)
        ]
        return str(render(messages=marks).prompt)

    padded = marked("\t")
    parts: list[str | int] = []
    for n, piece in enumerate(_MARK.split(marked(""))):
        if n % 2 == 0:
            parts += _markup(llm, piece)
            continue
        content = str(messages[int(piece)]["content"])
        # A template that trims the content (Llama 3's, Gemma's) has trimmed the mark's padding too.
        parts.append(content if f"\t\ue000{piece}\ue001\t" in padded else content.strip())
    return parts


# A message's place in the rendered template; private-use characters that no template writes.
_MARK = re.compile("\ue000(\\d+)\ue001")
_CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@lru_cache(maxsize=16)
def _formatter(template: str, bos: str, eos: str, add_generation_prompt: bool) -> Any:
    from llama_cpp import llama_chat_format

    return llama_chat_format.Jinja2ChatFormatter(
        template, eos, bos, add_generation_prompt=add_generation_prompt
    )


def _markup(llm: Llama, text: str) -> list[str | int]:
    """Template text cut into plain text and the control tokens llama.cpp finds in it."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    skipped_as_text = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    parts: list[str | int] = []
    at = 0
    for token in llm.tokenize(text.encode(), add_bos=False, special=True):
        if not llama_cpp.llama_vocab_get_attr(vocab, token) & skipped_as_text:
            continue
        spelled = _token_text(llm, token)
        found = text.find(spelled, at)
        if found < 0:
            continue
        parts += [text[at:found], token]
        at = found + len(spelled)
    parts.append(text[at:])
    return parts


def _token_text(llm: Llama, token: int) -> str:
    return "" if token < 0 else llm.detokenize([token], special=True).decode(errors="replace")
