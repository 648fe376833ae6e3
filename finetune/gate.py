"""The evaluation gate: a candidate GGUF is promoted only when it is better, measured with llama.cpp.

1. It must load and answer a question (an empty or failing answer ends it).
2. Evidence that it learned what was taught. For every taught fact (approved
   corrections grouped by ``finetune.teaching``): the likelihood of the
   approved answer rises on the questions people asked and on rule-made
   rephrasings no training step saw, and the greedy answer to the question
   contains the answer's key words. Where feedback was held out, its mean
   negative log-likelihood per token must fall too. With neither, there is
   no evidence and the gate refuses.
3. Facts stay in their lane (``finetune.lanes``): each fact's neighbours (its
   subject asked for another kind of answer, another subject in its form) must
   not get its key words: a candidate whose bleed share exceeds ``max_bleed``
   and the active model's is refused. Each fact's reverse question ("Who is
   Marisol Vantreck?") is asked and reported, not judged.
4. No forgetting: the shipped general-knowledge probe (``finetune.probe``) is
   asked of both models and paired question by question; McNemar's exact test
   refuses a candidate worse at ``probe_alpha`` (one-sided). The held-out
   FineTome NLL may rise by ``finetome_tolerance`` at most — a rule only when
   the FineTome is real: the shipped sample is synthetic, made by rules, and
   its figure is reported, not judged.

Every refusal comes with what to do next (``Verdict.next_steps``).

The figures come from ``finetune.scoring`` (llama.cpp itself, the runtime the
bots serve with); this module decides from them. The candidate GGUF is asked
alone, never through the chat service, so the gate never consults the
correction memory: what it counts as recalled, the model knows by itself
(``known_questions`` names those facts after a promotion).

    python -c "from pathlib import Path; from finetune.gate import evaluate; d = Path('data/dataset');
        verdict = evaluate('new.gguf', 'active.gguf', d / 'eval_feedback.jsonl', d / 'eval_finetome.jsonl');
        print(verdict.metrics())"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.model_check import ModelUnloadable, check_gguf
from finetune import jsonl
from finetune.config import GateConfig as GateConfig  # the bots' CLI imports these three from here
from finetune.probe import Paired, ProbeQuestion, load_probe, pair
from finetune.recall import bleed, bleed_rule, fact_entry
from finetune.recall import known_questions as known_questions
from finetune.scoring import GateFailure as GateFailure
from finetune.scoring import ModelScores, Score, score_model
from finetune.scoring import check_answers as check_answers
from finetune.teaching import Fact


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
                "alpha": self.config.probe_alpha,
                "paired": paired.to_dict() if (paired := _paired(self.candidate, self.active)) else None,
            },
            "facts": [fact_entry(fact) for fact in self.candidate.taught],
            "bleed": {
                "candidate": bleed(self.candidate),
                "active": bleed(self.active) if self.active else None,
                "max": self.config.max_bleed,
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
    "lower IRIS_GATE_PROBE_ALPHA and retrain, or serve this version anyway with "
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


def _paired(candidate: ModelScores, active: ModelScores | None) -> Paired | None:
    if candidate.probe is None or active is None or active.probe is None or not active.probe.total:
        return None
    return pair(active.probe, candidate.probe)


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
    bled, bleed_reasons, bleed_next = bleed_rule(candidate, active, config)
    passed &= not bled
    reasons.extend(bleed_reasons)
    next_steps.extend(bleed_next)
    forgot = False
    paired = _paired(candidate, active)
    if paired is not None and active.probe is not None and candidate.probe is not None:
        worse = paired.p < config.probe_alpha
        forgot |= worse
        passed &= not worse
        counted = "" if paired.per_question else " (counts only: no answers per question)"
        reasons.append(
            f"general-knowledge probe {active.probe.right}/{active.probe.total} → "
            f"{candidate.probe.right}/{candidate.probe.total} right; paired on {paired.questions} questions"
            f"{counted}: {paired.lost} lost, {paired.gained} gained, McNemar's exact one-sided p "
            f"{paired.p:.3f} ({'worse beyond chance' if worse else 'no loss shown'} at α "
            f"{config.probe_alpha:g}); accuracy {paired.difference:+.1%}, "
            f"95% interval {paired.low:+.1%} to {paired.high:+.1%}"
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


def check_servable(gguf: str | Path) -> str:
    """The promotion's last check: the file, as it is now, loads and answers as the bots serve it.

    The gate scored it in the run's own process, perhaps long before (a resumed
    run), and a damaged file can crash llama.cpp outright: this check runs in a
    child process (``core.model_check.check_gguf``). Raise ``GateFailure`` (one line).
    """
    try:
        return check_gguf(gguf)
    except ModelUnloadable as error:
        raise GateFailure(f"not promoted: {error}") from None


def probe_questions(config: GateConfig) -> list[ProbeQuestion]:
    """The shipped probe, or its first ``config.probe_questions`` questions when that is set."""
    questions = load_probe()
    return questions[: config.probe_questions] if config.probe_questions > 0 else questions
