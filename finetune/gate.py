"""The evaluation gate: a candidate GGUF is promoted only when it is better, measured with llama.cpp.

1. It must load and answer a question (an empty or failing answer ends it).
2. Evidence that it learned what was taught. For every taught fact (approved
   corrections grouped by ``finetune.teaching``): the likelihood of the
   approved answer rises on the questions people asked and on rule-made
   rephrasings no training step saw, and the greedy answer to the question
   contains the answer's key words. Where feedback was held out, its mean
   negative log-likelihood per token must fall too. With neither, there is
   no evidence and the gate refuses.
3. No forgetting: the shipped general-knowledge probe (``finetune.probe``) is
   asked of both models; the candidate may get at most ``probe_tolerance`` of
   it fewer right. The held-out FineTome NLL may rise by ``finetome_tolerance``
   at most — a rule only when the FineTome is real: the shipped sample is
   synthetic, made by rules, and its figure is reported, not judged.

Every refusal comes with what to do next (``Verdict.next_steps``).

Scoring runs llama.cpp itself (the runtime the bots serve with), not
transformers, so that the figures describe the file that will be served.

    python -c "from finetune.gate import score_file; print(score_file('model.gguf', 'eval.jsonl'))"
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.generation import open_gguf
from finetune import jsonl
from finetune.probe import ProbeQuestion, ProbeScore, grade, load_probe
from finetune.rows import FineTomeRow, Message, prompt_and_answer
from finetune.teaching import Fact, keyword_share, recalled

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
    # The candidate may answer at most this share of the general-knowledge probe fewer right.
    probe_tolerance: float = 0.05
    probe_questions: int = 0  # the first N probe questions; 0: all of them
    probe_answer_tokens: int = 24
    # The share of taught facts whose greedy answer must contain the key words (1: every one).
    recall_share: float = 1.0
    fact_answer_tokens: int = 48


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
    """One taught fact under one model: answer NLL on its questions and held-out wordings, greedy answers."""

    question: str
    asked_nll: float | None  # mean NLL per token of the approved answer, over the questions people asked
    held_out_nll: float | None  # the same over rule-made wordings no training step saw
    answer: str  # the greedy answer to the (most asked) question
    recalled: bool  # it contains every key word
    keyword_share: float
    held_out_recalled: int = 0
    held_out: int = 0


@dataclass(frozen=True)
class ModelScores:
    gguf: str
    feedback: Score | None
    finetome: Score | None
    seconds: float
    taught: tuple[FactScore, ...] = ()
    probe: ProbeScore | None = None


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
    next_steps: list[str] = field(default_factory=list)
    finetome_synthetic: bool = False

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
            "finetome_synthetic": self.finetome_synthetic,
            "probe": {"question": self.probe_question, "answer": self.probe_answer},
            "general_probe": {
                "candidate": self.candidate.probe.to_dict() if self.candidate.probe else None,
                "active": self.active.probe.to_dict() if self.active and self.active.probe else None,
                "tolerance": self.config.probe_tolerance,
            },
            "taught": [
                {
                    "candidate": asdict(fact),
                    "active": asdict(self.active.taught[n]) if self.active and self.active.taught else None,
                }
                for n, fact in enumerate(self.candidate.taught)
            ],
            "next_steps": self.next_steps,
            "seconds": round(self.candidate.seconds + (self.active.seconds if self.active else 0.0), 2),
        }


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
            reply: Any = llm.create_chat_completion(
                messages=[{"role": "user", "content": question}],
                max_tokens=max_tokens,
                temperature=0.0,
                seed=1,
                stop=["\n"] if first_line else [],
            )
            replies.append(str(reply["choices"][0]["message"]["content"] or "").strip())
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

    def tokens(self, context: list[Message], reply: str) -> tuple[list[int], list[int]]:
        """The prompt's tokens and the answer's (with the template's end-of-turn marks)."""
        messages: Any = context
        prompt = str(self.prompt_format(messages=messages).prompt)
        messages = [*context, {"role": "assistant", "content": reply}]
        full = str(self.full_format(messages=messages).prompt)
        answer_text = full[len(prompt) :] if full.startswith(prompt) else reply + self.eos
        prompt_ids: list[int] = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        answer_ids: list[int] = self.llm.tokenize(answer_text.encode(), add_bos=False, special=True)
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
    taught: list[FactScore] = []
    if facts:
        asked = [q for fact in facts for q in (fact.question, *fact.held_out)]
        replies = iter(answers(gguf, asked, config.fact_answer_tokens))
        for fact, (asked_nll, held_nll) in zip(facts, likelihoods, strict=True):
            reply = next(replies)
            held = [next(replies) for _ in fact.held_out]
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
                )
            )
    probe_score = None
    if probe:
        probe_score = grade(probe, probe_answers(gguf, probe, config.probe_answer_tokens, probe_cache))
    return ModelScores(str(gguf), feedback, finetome, time.perf_counter() - began, tuple(taught), probe_score)


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


# --- the decision -----------------------------------------------------------------------------

# What to do next, in plain words, for each kind of refusal.
NEXT_NO_EVIDENCE = (
    'Nothing was taught yet: correct a wrong reply (the ✏️ button, or `iris rate TURN --fix "…"`), '
    "approve it with `iris review` (or /review in the chat), then run `iris retrain` (or /retrain) again."
)
NEXT_NOT_LEARNED = (
    "Add one or two more approved corrections for {what}, ideally asked in other words, or give training "
    "more steps (IRIS_RETRAIN_STEPS_PER_FACT, IRIS_RETRAIN_MAX_TEACH_STEPS), then run `iris retrain` again."
)
NEXT_FORGOT = (
    "The new model lost general knowledge. Retrain with a gentler recipe (lower IRIS_RETRAIN_LEARNING_RATE, "
    "or a lower IRIS_RETRAIN_TEACH_WEIGHT so more general data is mixed in); if the loss is acceptable, "
    "raise IRIS_GATE_PROBE_TOLERANCE and retrain, or serve this version anyway with "
    "`iris models activate NAME` (its name is above)."
)
NEXT_BROKEN = (
    "The candidate's scores are not numbers: the run is broken. Run `iris retrain` again; "
    "if it repeats, lower IRIS_RETRAIN_LEARNING_RATE."
)
NEXT_NO_ANSWER = (
    "The new model does not load or answer; nothing changed. See convert.log in the run folder, "
    "then run `iris retrain` again (a lower IRIS_RETRAIN_LEARNING_RATE if it repeats)."
)
NEXT_ACTIVE_UNREADABLE = (
    "The active model could not be scored: check that its file exists (`iris models list`); "
    "`iris models activate NAME` promotes this candidate anyway."
)


def _fact_rules(
    candidate: ModelScores, active: ModelScores, facts_count: int, config: GateConfig
) -> tuple[bool, list[str], list[str]]:
    reasons: list[str] = []
    missed: list[str] = []
    rose_everywhere = True
    for mine, theirs in zip(candidate.taught, active.taught, strict=True):
        rose = _lower(mine.asked_nll, theirs.asked_nll) and _lower(mine.held_out_nll, theirs.held_out_nll, True)
        rose_everywhere &= rose
        said = "recalled" if mine.recalled else f"not recalled ({mine.keyword_share:.0%} of the key words)"
        reasons.append(
            f"taught {mine.question!r}: answer NLL {_fmt(theirs.asked_nll)} → {_fmt(mine.asked_nll)} on the "
            f"question, {_fmt(theirs.held_out_nll)} → {_fmt(mine.held_out_nll)} on {mine.held_out} held-out "
            f"rephrasings ({'rose' if rose else 'did not rise'}); greedy answer {said}: {mine.answer!r}; "
            f"held-out rephrasings recalled {mine.held_out_recalled}/{mine.held_out}"
        )
        if not mine.recalled or not rose:
            missed.append(mine.question)
    share = (facts_count - len(missed)) / facts_count
    enough = share >= config.recall_share and rose_everywhere
    if not enough:
        reasons.append(
            f"taught facts learned: {facts_count - len(missed)}/{facts_count} "
            f"(needed {config.recall_share:.0%}, and every answer's likelihood must rise)"
        )
    what = "the question" + ("s " if len(missed) > 1 else " ") + ", ".join(repr(q) for q in missed)
    return enough, reasons, [NEXT_NOT_LEARNED.format(what=what)] if not enough else []


def _lower(mine: float | None, theirs: float | None, missing_ok: bool = False) -> bool:
    if mine is None or theirs is None:
        return missing_ok
    return mine < theirs


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def judge(
    candidate: ModelScores,
    active: ModelScores | None,
    config: GateConfig,
    *,
    finetome_synthetic: bool = False,
) -> tuple[bool, list[str]]:
    """Apply the gate's rules to the scores; every rule says what it found."""
    passed, reasons, _next = decide(candidate, active, config, finetome_synthetic=finetome_synthetic)
    return passed, reasons


def decide(
    candidate: ModelScores,
    active: ModelScores | None,
    config: GateConfig,
    *,
    finetome_synthetic: bool = False,
) -> tuple[bool, list[str], list[str]]:
    """The verdict, the reasons in words, and what to do next when it says no."""
    reasons: list[str] = []
    next_steps: list[str] = []
    passed = True
    cand_fb, cand_ft = candidate.feedback, candidate.finetome
    figures = [("feedback", cand_fb), ("FineTome", cand_ft)]
    figures += [
        ("taught-answer", Score(f.asked_nll, 1, 1)) for f in candidate.taught if f.asked_nll is not None
    ]
    for split, score in figures:
        if score is not None and not math.isfinite(score.nll):
            return False, [f"the candidate's {split} NLL is not a number ({score.nll})"], [NEXT_BROKEN]
    if active is None:
        return True, ["no active model to compare with: the candidate loads and answers"], []
    act_fb, act_ft = active.feedback, active.finetome
    evidence = False
    if candidate.taught and len(active.taught) == len(candidate.taught):
        evidence = True
        learned, fact_reasons, fact_next = _fact_rules(candidate, active, len(candidate.taught), config)
        passed &= learned
        reasons.extend(fact_reasons)
        next_steps.extend(fact_next)
    if cand_fb is not None and act_fb is not None:
        evidence = True
        gain = act_fb.nll - cand_fb.nll
        better = gain > config.min_feedback_gain
        passed &= better
        reasons.append(
            f"held-out feedback NLL {act_fb.nll:.4f} → {cand_fb.nll:.4f} "
            f"({'better' if better else 'not better'}: gain {gain:+.4f}, needed > {config.min_feedback_gain:g})"
        )
        if not better and not next_steps:
            next_steps.append(NEXT_NOT_LEARNED.format(what="the held-out feedback"))
    if not evidence:
        passed = False
        reasons.append(
            "no held-out feedback and no taught fact to measure an improvement on "
            "(collect and approve corrections first)"
        )
        next_steps.append(NEXT_NO_EVIDENCE)
    forgot = False
    if candidate.probe is not None and active.probe is not None and active.probe.total:
        drop = (active.probe.right - candidate.probe.right) / active.probe.total
        kept = drop <= config.probe_tolerance + 1e-9
        forgot |= not kept
        passed &= kept
        reasons.append(
            f"general-knowledge probe {active.probe.right}/{active.probe.total} → "
            f"{candidate.probe.right}/{candidate.probe.total} right "
            f"({'within' if kept else 'beyond'} the {config.probe_tolerance:.0%} tolerance)"
        )
    else:
        reasons.append("no general-knowledge probe was asked: forgetting not checked on real questions")
    if cand_ft is None or act_ft is None:
        reasons.append("no held-out FineTome rows: general quality not checked")
    else:
        limit = act_ft.nll * (1 + config.finetome_tolerance)
        kept = cand_ft.nll <= limit
        change = (cand_ft.nll - act_ft.nll) / act_ft.nll
        if finetome_synthetic:
            reasons.append(
                f"held-out FineTome NLL {act_ft.nll:.4f} → {cand_ft.nll:.4f} ({change:+.1%}; the synthetic "
                "sample shipped with Iris, made by rules: reported, not a forgetting check)"
            )
        else:
            passed &= kept
            forgot |= not kept
            reasons.append(
                f"held-out FineTome NLL {act_ft.nll:.4f} → {cand_ft.nll:.4f} ({change:+.1%}; "
                f"{'within' if kept else 'beyond'} the {config.finetome_tolerance:.0%} tolerance)"
            )
    if forgot:
        next_steps.append(NEXT_FORGOT)
    return passed, reasons, next_steps


def evaluate(
    candidate: str | Path,
    active: str | Path | None,
    eval_feedback: Path,
    eval_finetome: Path,
    config: GateConfig | None = None,
    *,
    active_name: str | None = None,
    facts: Sequence[Fact] = (),
    probe: Sequence[ProbeQuestion] = (),
    probe_cache: Path | None = None,
    finetome_synthetic: bool = False,
) -> Verdict:
    """Run the whole gate: load and answer, then score candidate and active model the same way.

    ``probe``: the general-knowledge questions to ask both (``probe_questions(config)``
    gives the shipped ones); none: forgetting is checked on FineTome only.
    """
    config = config or GateConfig()
    probe_answer = check_answers(candidate, config.probe, config.probe_tokens)
    feedback_rows, finetome_rows = (
        jsonl.read_finetome(eval_feedback, missing_ok=True),
        jsonl.read_finetome(eval_finetome, missing_ok=True),
    )
    cand_scores = score_model(
        candidate, feedback_rows, finetome_rows, config, facts=facts, probe=probe, probe_cache=probe_cache
    )
    try:
        act_scores = (
            score_model(active, feedback_rows, finetome_rows, config, facts=facts, probe=probe)
            if active
            else None
        )
    except GateFailure as error:
        # Nothing to compare with is no proof of being better; --force can still promote.
        reason = f"the active model could not be scored ({error})"
        return Verdict(
            False,
            [reason],
            cand_scores,
            None,
            config.probe,
            probe_answer,
            config,
            active_name,
            [NEXT_ACTIVE_UNREADABLE],
            finetome_synthetic,
        )
    passed, reasons, next_steps = decide(cand_scores, act_scores, config, finetome_synthetic=finetome_synthetic)
    return Verdict(
        passed,
        reasons,
        cand_scores,
        act_scores,
        config.probe,
        probe_answer,
        config,
        active_name,
        next_steps,
        finetome_synthetic,
    )


def probe_questions(config: GateConfig) -> list[ProbeQuestion]:
    """The shipped probe, or its first ``config.probe_questions`` questions when that is set."""
    questions = load_probe()
    return questions[: config.probe_questions] if config.probe_questions > 0 else questions
