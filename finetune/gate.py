"""The evaluation gate: a candidate GGUF is promoted only when it is better, measured with llama.cpp.

1. It must load and answer a question (an empty or failing answer ends it).
2. Candidate and active model are scored on the held-out feedback split: the
   mean negative log-likelihood per token of the approved / 👍 answers, given
   their conversation, rendered with each model's own chat template — lower is
   better, and the candidate must be lower than the active model.
3. Both are scored the same way on a held-out FineTome slice; the candidate may
   not be worse than the active model by more than a tolerance (relative).

Scoring runs llama.cpp itself (the runtime the bots serve with), not
transformers, so that the figures describe the file that will be served.

    python -c "from finetune.gate import score_file; print(score_file('model.gguf', 'eval.jsonl'))"
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.generation import open_gguf
from finetune.feedback import read_jsonl
from finetune.training import prompt_and_answer

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

# Used where a GGUF carries no chat template (the bundled and Iris-made ones all do).
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class GateConfig:
    """The gate's rules; every field is a setting (``IRIS_GATE_*``)."""

    # The candidate's FineTome NLL may exceed the active model's by at most this fraction.
    finetome_tolerance: float = 0.05
    # The candidate's held-out feedback NLL must be below the active model's by more than this (nats/token).
    min_feedback_gain: float = 0.0
    max_rows: int = 64  # held-out rows scored per split (the first ones)
    max_answer_tokens: int = 256  # an answer's first tokens are scored; long FineTome replies are cut
    context_tokens: int = 1024
    probe: str = "What is the capital of France?"
    probe_tokens: int = 48


class GateFailure(RuntimeError):
    """The candidate did not load or did not answer."""


@dataclass(frozen=True)
class Score:
    """Mean negative log-likelihood per answer token over ``rows`` examples."""

    nll: float
    tokens: int
    rows: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll) if self.nll < 50 else math.inf


@dataclass(frozen=True)
class ModelScores:
    gguf: str
    feedback: Score | None
    finetome: Score | None
    seconds: float


@dataclass(frozen=True)
class Verdict:
    """Whether the candidate may be promoted, why, and every figure behind it."""

    passed: bool
    reasons: list[str]
    candidate: ModelScores
    active: ModelScores | None
    probe_question: str
    probe_answer: str
    config: GateConfig = field(default_factory=GateConfig)
    active_name: str | None = None

    def metrics(self) -> dict[str, Any]:
        """The figures as they go into the model version's metrics (plain JSON)."""

        def pair(split: str) -> dict[str, Any]:
            cand: Score | None = getattr(self.candidate, split)
            act: Score | None = getattr(self.active, split) if self.active else None
            return {
                "candidate": round(cand.nll, 5) if cand else None,
                "active": round(act.nll, 5) if act else None,
                "rows": cand.rows if cand else 0,
                "tokens": cand.tokens if cand else 0,
            }

        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "compared_with": self.active_name,
            "feedback_nll": pair("feedback"),
            "finetome_nll": pair("finetome"),
            "finetome_tolerance": self.config.finetome_tolerance,
            "min_feedback_gain": self.config.min_feedback_gain,
            "probe": {"question": self.probe_question, "answer": self.probe_answer},
            "seconds": round(self.candidate.seconds + (self.active.seconds if self.active else 0.0), 2),
        }


# --- loading and answering ---------------------------------------------------------------


def load(gguf: str | Path, context_tokens: int, *, logits_all: bool = False) -> Llama:
    try:
        return open_gguf(gguf, n_ctx=context_tokens, logits_all=logits_all)
    except (ValueError, RuntimeError, OSError) as error:
        raise GateFailure(f"{Path(gguf).name} does not load in llama.cpp: {error}") from error


def answer(gguf: str | Path, question: str, max_tokens: int = 48) -> str:
    """The model's greedy answer to ``question``, as the bots would give it."""
    llm = load(gguf, 1024)
    try:
        reply: Any = llm.create_chat_completion(
            messages=[{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0.0, seed=1
        )
        return str(reply["choices"][0]["message"]["content"] or "").strip()
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
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.config = config
        # Any: llama-cpp-python's message types and a few untyped methods are in the way here.
        self.llm: Any = load(gguf, config.context_tokens, logits_all=True)
        template = str(self.llm.metadata.get("tokenizer.chat_template") or CHATML)
        bos = self._token_text(self.llm.token_bos())
        eos = self._token_text(self.llm.token_eos())
        self.eos = eos
        self.prompt_format = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=True)
        self.full_format = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=False)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore"))

    def tokens(self, context: list[dict[str, str]], reply: str) -> tuple[list[int], list[int]]:
        """The prompt's tokens and the answer's (with the template's end-of-turn marks)."""
        messages: Any = context
        prompt = str(self.prompt_format(messages=messages).prompt)
        messages = [*context, {"role": "assistant", "content": reply}]
        full = str(self.full_format(messages=messages).prompt)
        answer_text = full[len(prompt) :] if full.startswith(prompt) else reply + self.eos
        prompt_ids: list[int] = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        answer_ids: list[int] = self.llm.tokenize(answer_text.encode(), add_bos=False, special=True)
        return prompt_ids, answer_ids[: self.config.max_answer_tokens]

    def nll(self, context: list[dict[str, str]], reply: str) -> tuple[float, int]:
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

    def score(self, rows: Iterable[dict[str, Any]]) -> Score | None:
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

    def close(self) -> None:
        self.llm.close()


def score_model(
    gguf: str | Path,
    feedback_rows: Sequence[dict[str, Any]],
    finetome_rows: Sequence[dict[str, Any]],
    config: GateConfig | None = None,
) -> ModelScores:
    """Score one GGUF on both held-out splits."""
    config = config or GateConfig()
    began = time.perf_counter()
    scorer = _Scorer(gguf, config)
    try:
        feedback = scorer.score(feedback_rows)
        finetome = scorer.score(finetome_rows)
    finally:
        scorer.close()
    return ModelScores(str(gguf), feedback, finetome, time.perf_counter() - began)


def score_file(gguf: str | Path, jsonl: str | Path, config: GateConfig | None = None) -> Score | None:
    """Mean answer NLL of one GGUF on one FineTome-shaped JSONL file."""
    return score_model(gguf, read_jsonl(Path(jsonl), missing_ok=True), [], config).feedback


# --- the decision -----------------------------------------------------------------------------


def judge(candidate: ModelScores, active: ModelScores | None, config: GateConfig) -> tuple[bool, list[str]]:
    """Apply the gate's rules to the scores; every rule says what it found."""
    reasons: list[str] = []
    passed = True
    cand_fb, cand_ft = candidate.feedback, candidate.finetome
    for split, score in (("feedback", cand_fb), ("FineTome", cand_ft)):
        if score is not None and not math.isfinite(score.nll):
            return False, [f"the candidate's {split} NLL is not a number ({score.nll})"]
    if active is None:
        return True, ["no active model to compare with: the candidate loads and answers"]
    act_fb, act_ft = active.feedback, active.finetome
    if cand_fb is None or act_fb is None:
        passed = False
        reasons.append("no held-out feedback to measure an improvement on (collect and approve more feedback)")
    else:
        gain = act_fb.nll - cand_fb.nll
        better = gain > config.min_feedback_gain
        passed &= better
        reasons.append(
            f"held-out feedback NLL {act_fb.nll:.4f} → {cand_fb.nll:.4f} "
            f"({'better' if better else 'not better'}: gain {gain:+.4f}, needed > {config.min_feedback_gain:g})"
        )
    if cand_ft is None or act_ft is None:
        reasons.append("no held-out FineTome rows: general quality not checked")
    else:
        limit = act_ft.nll * (1 + config.finetome_tolerance)
        kept = cand_ft.nll <= limit
        passed &= kept
        change = (cand_ft.nll - act_ft.nll) / act_ft.nll
        reasons.append(
            f"held-out FineTome NLL {act_ft.nll:.4f} → {cand_ft.nll:.4f} ({change:+.1%}; "
            f"{'within' if kept else 'beyond'} the {config.finetome_tolerance:.0%} tolerance)"
        )
    return passed, reasons


def evaluate(
    candidate: str | Path,
    active: str | Path | None,
    eval_feedback: Path,
    eval_finetome: Path,
    config: GateConfig | None = None,
    *,
    active_name: str | None = None,
) -> Verdict:
    """Run the whole gate: load and answer, then score candidate and active model on both held-out splits."""
    config = config or GateConfig()
    probe_answer = check_answers(candidate, config.probe, config.probe_tokens)
    feedback_rows, finetome_rows = (
        read_jsonl(eval_feedback, missing_ok=True),
        read_jsonl(eval_finetome, missing_ok=True),
    )
    cand_scores = score_model(candidate, feedback_rows, finetome_rows, config)
    try:
        act_scores = score_model(active, feedback_rows, finetome_rows, config) if active else None
    except GateFailure as error:
        # Nothing to compare with is no proof of being better; --force can still promote.
        reason = f"the active model could not be scored ({error})"
        return Verdict(False, [reason], cand_scores, None, config.probe, probe_answer, config, active_name)
    passed, reasons = judge(cand_scores, act_scores, config)
    return Verdict(passed, reasons, cand_scores, act_scores, config.probe, probe_answer, config, active_name)


def config_dict(config: GateConfig) -> dict[str, Any]:
    return asdict(config)
