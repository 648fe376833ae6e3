"""What the gate measures, with llama.cpp: a GGUF's answers and the likelihood it gives to known answers.

Every figure comes from the runtime the bots serve with, not transformers, so
that it describes the file that will be served: the mean negative
log-likelihood per answer token on held-out rows (prompts rendered with the
file's own chat template), each taught fact's answer on its questions and
held-out wordings, its reverse question and neighbours (``finetune.lanes``),
and the greedy answers to the general-knowledge probe. The file is asked
alone: no correction memory, no chat service, so what it recalls is its own.
``finetune.gate`` decides from these figures.

    python -c "from finetune.scoring import score_file; print(score_file('model.gguf', 'eval.jsonl'))"
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.batching import chat_tokens
from core.gguf import open_gguf
from finetune import jsonl
from finetune.config import GateConfig
from finetune.lanes import neighbours, reverse
from finetune.probe import ProbeQuestion, ProbeScore, grade, load_probe
from finetune.rows import FineTomeRow, Message, prompt_and_answer
from finetune.teaching import Fact, keyword_share, recalled

if TYPE_CHECKING:
    from llama_cpp import Llama


class GateFailure(RuntimeError):
    """The candidate did not load or did not answer."""


@dataclass(frozen=True)
class Score:
    """Mean negative log-likelihood per answer token over ``rows`` examples."""

    nll: float
    tokens: int
    rows: int


@dataclass(frozen=True)
class FactScore:
    """One taught fact under one model alone (no correction memory): answer NLL, greedy answers, its lane.

    Besides the question and its held-out wordings, the fact's reverse question
    and its neighbours (``finetune.lanes``) are asked; ``bleeding`` holds the
    neighbours whose reply had the fact's key words, with that reply.
    """

    question: str
    asked_nll: float | None  # mean NLL per token of the approved answer, over the questions people asked
    held_out_nll: float | None  # the same over rule-made wordings no training step saw
    answer: str  # the greedy answer to the (most asked) question
    recalled: bool  # it contains every key word
    keyword_share: float
    held_out_recalled: int = 0
    held_out: int = 0
    expected: str = ""  # the approved answer
    keys: tuple[str, ...] = ()
    questions: tuple[str, ...] = ()  # every wording people asked, the question first
    reverse: str | None = None  # asked about the answer's key entity
    reverse_answer: str = ""
    reverse_recalled: bool | None = None  # the reply names the question's subject; None: no reverse
    neighbours: tuple[str, ...] = ()
    bleeding: tuple[tuple[str, str], ...] = ()  # (neighbour, reply) pairs whose reply had the key words

    @property
    def known(self) -> bool:
        """Recalled on its question and on at least 2 of 3 held-out wordings (all of them when fewer)."""
        need = min(self.held_out, max(2, math.ceil(self.held_out * 2 / 3)))
        return self.recalled and self.held_out_recalled >= need


@dataclass(frozen=True)
class ModelScores:
    gguf: str
    feedback: Score | None
    finetome: Score | None
    seconds: float
    taught: tuple[FactScore, ...] = ()
    probe: ProbeScore | None = None


# --- loading and answering ---------------------------------------------------------------


def load(gguf: str | Path, context_tokens: int, *, logits_all: bool = False) -> Llama:
    from finetune.training import free_cores

    # The free cores, as training takes: llama.cpp's default of half the cores leaves one idle
    # on an idle 2-core machine, and more threads than free cores spin against other work.
    threads = free_cores() or max(1, (os.cpu_count() or 2) // 2)
    try:
        return open_gguf(gguf, n_ctx=context_tokens, logits_all=logits_all, n_threads=threads)
    except (ValueError, RuntimeError, OSError) as error:
        raise GateFailure(f"{Path(gguf).name} does not load in llama.cpp: {error}") from error


def answer(gguf: str | Path, question: str, max_tokens: int = 48) -> str:
    """The model's greedy answer to ``question``, as the bots would give it (all of it, not one line)."""
    return answers(gguf, [question], max_tokens, first_line=False)[0]


def answers(gguf: str | Path, questions: list[str], max_tokens: int = 48, first_line: bool = True) -> list[str]:
    """Greedy answers to ``questions``, each in a new conversation, from one loaded model.

    With ``first_line`` an answer stops at its first line: a small model's rambling
    after it costs time and proves nothing.
    """
    llm = load(gguf, 1024)
    try:
        replies = []
        for question in questions:
            # The prompt as the bots build it (the question's text never becomes a control token).
            reply: Any = llm.create_completion(
                prompt=chat_tokens(llm, [{"role": "user", "content": question}]),
                max_tokens=max_tokens,
                temperature=0.0,
                seed=1,
                stop=["\n"] if first_line else [],
            )
            replies.append(str(reply["choices"][0]["text"] or "").strip())
        return replies
    except Exception as error:
        raise GateFailure(f"{Path(gguf).name} failed to answer: {error}") from error
    finally:
        llm.close()


def check_answers(gguf: str | Path, question: str, max_tokens: int = 48) -> str:
    """The first gate: the file loads and gives a non-empty answer; raise GateFailure otherwise."""
    text = answer(gguf, question, max_tokens)
    if not text:
        raise GateFailure(f"{Path(gguf).name} gave an empty answer to {question!r}")
    return text


# --- scoring -------------------------------------------------------------------------------


class _Scorer:
    """Mean NLL of answers under one GGUF, prompts rendered with the file's own chat template."""

    def __init__(self, gguf: str | Path, config: GateConfig) -> None:
        self.config = config
        # Any: llama-cpp-python's message types and a few untyped methods are in the way here.
        self.llm: Any = load(gguf, config.context_tokens, logits_all=True)

    def tokens(self, context: list[Message], reply: str) -> tuple[list[int], list[int]]:
        """The prompt's tokens and the answer's (with the template's end-of-turn marks).

        Tokenized as the bots tokenize a prompt (``chat_tokens``): what people wrote is text,
        never a control token, in the rows scored as in the replies served.
        """
        prompt_ids = chat_tokens(self.llm, context)
        full = chat_tokens(
            self.llm, [*context, {"role": "assistant", "content": reply}], add_generation_prompt=False
        )
        if full[: len(prompt_ids)] == prompt_ids:
            answer_ids = full[len(prompt_ids) :]
        else:  # a template that renders a history unlike its prompt: the reply and an end of turn
            answer_ids = [
                *self.llm.tokenize(reply.encode(), add_bos=False, special=False),
                self.llm.token_eos(),
            ]
        return prompt_ids, answer_ids[: self.config.max_answer_tokens]

    def nll(self, context: list[Message], reply: str) -> tuple[float, int]:
        """Summed NLL of the answer tokens, and how many there were."""
        import numpy as np

        prompt_ids, answer_ids = self.tokens(context, reply)
        room = self.config.context_tokens - len(answer_ids)
        if room < 8:
            return 0.0, 0
        prompt_ids = prompt_ids[-room:]  # the oldest context goes first when it does not fit
        self.llm.reset()
        self.llm.eval(prompt_ids + answer_ids)
        start = len(prompt_ids) - 1
        logits = np.asarray(self.llm.scores[start : start + len(answer_ids)], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        picked = logits[np.arange(len(answer_ids)), answer_ids]
        return float((log_norm - picked).sum()), len(answer_ids)

    def score(self, rows: Iterable[FineTomeRow]) -> Score | None:
        total, tokens, used = 0.0, 0, 0
        for row in rows:
            if used >= self.config.max_rows:
                break
            pair = prompt_and_answer(row)
            if pair is None:
                continue
            summed, count = self.nll(*pair)
            if count:
                total, tokens, used = total + summed, tokens + count, used + 1
        return Score(total / tokens, tokens, used) if tokens else None

    def mean_nll(self, questions: Sequence[str], answer: str) -> float | None:
        """Mean NLL per token of ``answer`` asked each of ``questions`` in a new conversation."""
        total, tokens = 0.0, 0
        for question in questions:
            summed, count = self.nll([{"role": "user", "content": question}], answer)
            total, tokens = total + summed, tokens + count
        return total / tokens if tokens else None

    def close(self) -> None:
        self.llm.close()


def score_model(
    gguf: str | Path,
    feedback_rows: Sequence[FineTomeRow],
    finetome_rows: Sequence[FineTomeRow],
    config: GateConfig | None = None,
    *,
    facts: Sequence[Fact] = (),
    probe: Sequence[ProbeQuestion] = (),
    probe_cache: Path | None = None,
) -> ModelScores:
    """Score one GGUF on both held-out splits, every taught fact, and the general-knowledge probe."""
    config = config or GateConfig()
    began = time.perf_counter()
    scorer = _Scorer(gguf, config)
    try:
        feedback = scorer.score(feedback_rows)
        finetome = scorer.score(finetome_rows)
        likelihoods = [
            (scorer.mean_nll(f.questions, f.answer), scorer.mean_nll(f.held_out, f.answer)) for f in facts
        ]
    finally:
        scorer.close()
    taught = _ask_facts(gguf, facts, likelihoods, config) if facts else []
    probe_score = None
    if probe:
        probe_score = grade(probe, probe_answers(gguf, probe, config.probe_answer_tokens, probe_cache))
    return ModelScores(str(gguf), feedback, finetome, time.perf_counter() - began, tuple(taught), probe_score)


def _ask_facts(
    gguf: str | Path,
    facts: Sequence[Fact],
    likelihoods: list[tuple[float | None, float | None]],
    config: GateConfig,
) -> list[FactScore]:
    """Every fact's question, held-out wordings, reverse and neighbours, greedy, from one loaded model."""
    shipped = [q.question for q in load_probe()]  # the whole file: the same neighbours whatever is asked
    lanes = [
        (reverse(f.question, f.answer, f.keywords), neighbours(f.question, f.keywords, shipped)) for f in facts
    ]
    asked = [
        q
        for fact, (back, near) in zip(facts, lanes, strict=True)
        for q in (fact.question, *fact.held_out, *([back[0]] if back else []), *near)
    ]
    replies = iter(answers(gguf, asked, config.fact_answer_tokens))
    taught = []
    for fact, (asked_nll, held_nll), (back, near) in zip(facts, likelihoods, lanes, strict=True):
        reply = next(replies)
        held = [next(replies) for _ in fact.held_out]
        back_reply = next(replies) if back else ""
        near_replies = [next(replies) for _ in near]
        taught.append(
            FactScore(
                question=fact.question,
                asked_nll=asked_nll,
                held_out_nll=held_nll,
                answer=reply,
                recalled=recalled(reply, fact.keywords),
                keyword_share=keyword_share(reply, fact.keywords),
                held_out_recalled=sum(recalled(text, fact.keywords) for text in held),
                held_out=len(held),
                expected=fact.answer,
                keys=tuple(fact.keywords),
                questions=tuple(fact.questions),
                reverse=back[0] if back else None,
                reverse_answer=back_reply,
                reverse_recalled=recalled(back_reply, back[1]) if back else None,
                neighbours=tuple(near),
                bleeding=tuple(
                    (q, r) for q, r in zip(near, near_replies, strict=True) if recalled(r, fact.keywords)
                ),
            )
        )
    return taught


def probe_answers(
    gguf: str | Path, probe: Sequence[ProbeQuestion], max_tokens: int, cache: Path | None = None
) -> list[str]:
    """The model's answers to the probe, from ``cache`` when this very file was asked before.

    A promoted candidate is the next run's active model: its answers are asked once, not every run.
    """
    questions = [q.question for q in probe]
    stat = Path(gguf).stat()
    key = hashlib.sha256(
        json.dumps([str(Path(gguf).resolve()), stat.st_size, stat.st_mtime_ns, max_tokens, questions]).encode()
    ).hexdigest()
    known: dict[str, list[str]] = {}
    if cache is not None and cache.exists():
        with contextlib.suppress(ValueError, OSError):
            known = json.loads(cache.read_text())
    if key in known and len(known[key]) == len(questions):
        return known[key]
    replies = answers(gguf, questions, max_tokens)
    if cache is not None:
        known[key] = replies
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, ensure_ascii=False))
    return replies


def score_file(gguf: str | Path, questions: str | Path, config: GateConfig | None = None) -> Score | None:
    """Mean answer NLL of one GGUF on one FineTome-shaped JSONL file."""
    return score_model(gguf, jsonl.read_finetome(Path(questions), missing_ok=True), [], config).feedback
