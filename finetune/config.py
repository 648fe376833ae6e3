"""The retraining side's settings groups, each taken as it is by the part that reads it.

``bots.settings`` nests them (``IRIS_FEEDBACK_*``, ``IRIS_DATASET_*``, ``IRIS_GATE_*``,
``IRIS_RETRAIN_*``), so this module imports nothing heavy: the standard library, and
``finetune.profiles`` (standard library only) when asked for a profile's overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class FeedbackConfig:
    """Which ratings become training data, and how (``iris feedback export`` and every build)."""

    # People who never said yes or no to training use: "opt-out" counts them in, "opt-in" leaves them out.
    consent: Literal["opt-out", "opt-in"] = "opt-out"
    scrub: bool = True  # mask e-mail addresses and phone numbers in exported feedback
    context_turns: int = 20  # earlier turns an exported example keeps as its context


@dataclass(frozen=True)
class BuildConfig:
    """Every knob of the dataset build (``iris dataset build``, and each retrain)."""

    # FineTome: "sample" (shipped), a Hub name such as mlabonne/FineTome-100k, or a local parquet/JSONL path.
    finetome: str = "sample"
    sample_size: int | None = 2000  # FineTome rows drawn after the score filter; None: all
    min_score: float | None = 3.5  # FineTome's own quality score; None: keep all
    min_chars: int = 2  # replies shorter than this are dropped
    max_chars: int = 8000  # whole conversations longer than this are dropped
    drop_refusals: bool = True
    drop_non_language: bool = True
    near_duplicate: float = 0.8  # estimated Jaccard similarity of a duplicate; 1: exact only
    feedback_oversample: float = 3.0  # copies of each feedback example in training
    person_cap: int = 50  # feedback examples one person may contribute; 0: no cap
    eval_fraction: float = 0.1  # feedback held out for evaluation
    eval_finetome: int = 100  # FineTome rows held out for evaluation
    seed: int = 42
    progress: bool = True  # progress bars on the terminal


@dataclass(frozen=True)
class GateConfig:
    """The gate's rules. ``finetune.scoring`` reads the rows, tokens and context; ``finetune.gate``
    decides by the tolerances, gains and shares."""

    # The candidate's FineTome NLL may exceed the active model's by at most this fraction.
    finetome_tolerance: float = 0.05
    # The candidate's held-out feedback NLL must be below the active model's by more than this (nats/token).
    min_feedback_gain: float = 0.0
    max_rows: int = 64  # held-out rows scored per split (the first ones)
    max_answer_tokens: int = 256  # an answer's first tokens are scored; long FineTome replies are cut
    context_tokens: int = 1024
    probe: str = "What is the capital of France?"  # asked of every candidate: it must load and answer
    probe_tokens: int = 48
    # The general-knowledge probe (finetune/data/probe.jsonl) refuses a candidate when McNemar's exact
    # test on the paired answers says it is worse at this level (one-sided p below it).
    probe_alpha: float = 0.05
    probe_questions: int = 0  # the first N probe questions; 0: all of them
    probe_answer_tokens: int = 24
    # The share of taught facts whose greedy answer must contain the key words (1: every one).
    recall_share: float = 1.0
    fact_answer_tokens: int = 48
    # At most this share of the taught facts' neighbour questions may get a taught answer's key words
    # (and no more than under the active model): about one neighbour in five, see docs/retrain.md.
    max_bleed: float = 0.2


@dataclass(frozen=True)
class RetrainSettings:
    """Where and how ``iris retrain`` runs; the fields a ``Profile`` also has override the profile's."""

    # "auto" (llama-3.2-1b on an NVIDIA GPU with Unsloth, cpu-tiny otherwise) or a profile name.
    profile: str = "auto"
    dir: Path | None = None  # runs go to <dir>/runs/<name>; None: <data_dir>/retrain
    base_cache: Path | None = None  # GGUF bases converted once for transformers; None: <data_dir>/models/hf
    threads: int | None = None  # torch's CPU threads; None: the cores free when a run starts
    timeout_minutes: float = 180.0  # a chat /retrain is stopped after this long (it can be resumed)
    ab_share: float | None = None  # set: a candidate that passes the gate is A/B tested on this share
    # Overrides of the profile (finetune.profiles); None keeps the profile's value.
    backend: Literal["auto", "unsloth", "trl"] | None = None
    base_model: str | None = None  # a Hub id, an HF directory, a .gguf file or "bundled"
    objective: str | None = None  # sft, sft+kto, dpo or sft+dpo
    preference_steps: int | None = None  # the KTO or DPO stage's steps
    max_steps: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    max_seq_length: int | None = None
    save_steps: int | None = None
    quant: Literal["auto", "f16", "q8_0", "q4_k_m"] | None = None
    # Teaching (docs/retrain.md): the share of training rows that are taught answers, whether the
    # rule-made rephrasings are trained too, steps per taught fact and their cap, and the NLL per
    # token at which every taught answer is learned and training stops (0: off).
    teach_weight: float | None = None
    teach_wordings: bool | None = None
    steps_per_fact: int | None = None
    max_teach_steps: int | None = None
    teach_target_nll: float | None = None

    def profile_overrides(self) -> dict[str, Any]:
        """The profile fields this sets, by name (those both dataclasses have, when not None)."""
        from finetune.profiles import Profile  # standard library only, too

        return {
            f.name: getattr(self, f.name) for f in fields(Profile) if getattr(self, f.name, None) is not None
        }
