"""Training profiles: the two GPU runs Iris started from, and one that fits this CPU.

A profile holds every knob of one LoRA run. The functions below turn it into
the keyword arguments of the libraries that train it (Unsloth's
``FastLanguageModel``, PEFT's ``LoraConfig``, TRL's ``SFTConfig`` /
``KTOConfig`` / ``DPOConfig``), so that the wiring is visible and testable on a
machine without a GPU. Nothing here imports torch at module level.

    iris retrain --profile cpu-tiny          # this machine
    iris retrain --profile llama-3.2-1b      # an NVIDIA GPU with Unsloth
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Backend = Literal["auto", "unsloth", "trl"]

# LoRA on every attention and MLP projection of a Llama-style block.
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The base model name that means "the SmolLM2 GGUF shipped with Iris" (see core.gguf).
BUNDLED = "bundled"

OBJECTIVES = ("sft", "kto", "dpo")


@dataclass(frozen=True)
class Profile:
    """Every setting of one LoRA run."""

    name: str
    base_model: str  # a Hub id, a local HF directory, a .gguf file, or "bundled"
    description: str = ""
    backend: Backend = "auto"
    # Stages run in order, joined by "+": "sft", "sft+kto" (👍/👎), "dpo" or "sft+dpo" (correction pairs).
    objective: str = "sft"
    max_seq_length: int = 2048
    load_in_4bit: bool = False
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_PROJECTIONS
    # True, False, or "unsloth" (Unsloth's offloaded checkpointing; plain True on the TRL backend).
    gradient_checkpointing: bool | str = "unsloth"
    batch_size: int = 2
    grad_accum: int = 4
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    warmup_steps: int = 5
    weight_decay: float = 0.01
    lr_scheduler: str = "linear"
    optim: str = "adamw_8bit"
    save_steps: int = 10
    save_total_limit: int | None = 3
    logging_steps: int = 1
    seed: int = 3407
    # Unsloth's chat template name (unsloth.chat_templates); None keeps the model's own.
    chat_template: str | None = None
    # The markers Unsloth's train_on_responses_only masks by (they follow chat_template).
    instruction_part: str | None = None
    response_part: str | None = None
    # The second stage (KTO or DPO): its own step count and learning rate, and beta.
    preference_steps: int = 20
    preference_learning_rate: float = 5e-6
    preference_beta: float = 0.1
    quant: str = "auto"  # GGUF type: "auto" (Q8_0 under 1B parameters, Q4_K_M from 1B), f16, q8_0, q4_k_m
    # Teaching (approved corrections grouped into facts, finetune.teaching). The share of SFT rows
    # that are taught answers (each fact's questions and rule-made rephrasings); 0 leaves them out.
    teach_weight: float = 0.0
    teach_wordings: bool = True  # train on the rule-made rephrasings too (False: the asked questions only)
    # Step-count runs: at least max_steps, and steps_per_fact per taught fact up to max_teach_steps.
    steps_per_fact: int = 0
    max_teach_steps: int = 0
    # Stop once every taught answer's mean NLL per token (on its training wordings) is below this; 0: off.
    teach_target_nll: float = 0.0
    teach_check_steps: int = 10  # how often that is measured

    @property
    def stages(self) -> list[str]:
        """The objective's stages in order, e.g. ``["sft", "kto"]``."""
        stages = [part.strip() for part in self.objective.split("+") if part.strip()]
        unknown = [stage for stage in stages if stage not in OBJECTIVES]
        if not stages or unknown:
            raise ValueError(f"objective {self.objective!r}: use sft, sft+kto, dpo or sft+dpo")
        return stages

    def with_overrides(self, **changes: Any) -> Profile:
        """This profile with the given fields changed; ``None`` values are ignored."""
        changes = {key: value for key, value in changes.items() if value is not None}
        if "target_modules" in changes:
            changes["target_modules"] = tuple(changes["target_modules"])
        profile = dataclasses.replace(self, **changes)
        profile.stages  # noqa: B018 — validates the objective now rather than mid-run
        return profile

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Profile:
        """The profile ``to_dict`` stored (as JSON: lists for tuples); keys this version lacks are ignored."""
        from pydantic import TypeAdapter

        return TypeAdapter(cls).validate_python(values)


# Llama 3's header markers: what Unsloth's train_on_responses_only masks by.
_LLAMA3_USER = "<|start_header_id|>user<|end_header_id|>\n\n"
_LLAMA3_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"

# The teaching means, the same on every profile (measured on cpu-tiny, docs/retrain.md): taught
# answers are a quarter of what a step sees (half made the 135M model answer "Tromsø" for the
# capital of France after 20 steps), with their rule-made rephrasings, and training stops once
# every taught answer is likely enough. Step scaling applies to step-count runs (cpu-tiny); the GPU
# profiles keep their one epoch.
TEACHING: dict[str, Any] = {
    "teach_weight": 0.25,
    "teach_wordings": True,
    "teach_target_nll": 0.05,
    "teach_check_steps": 10,
}

PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            name="llama-3.2-1b",
            description="Llama 3.2 1B Instruct, 4-bit, Unsloth on an NVIDIA GPU (the first seed run)",
            base_model="unsloth/Llama-3.2-1B-Instruct-bnb-4bit",
            backend="unsloth",
            load_in_4bit=True,
            batch_size=2,
            chat_template="llama-3.1",
            instruction_part=_LLAMA3_USER,
            response_part=_LLAMA3_ASSISTANT,
            **TEACHING,
        ),
        Profile(
            name="llama-3.2-3b",
            description="Llama 3.2 3B Instruct, 4-bit, Unsloth on an NVIDIA GPU (the second seed run)",
            base_model="unsloth/Llama-3.2-3B-Instruct-bnb-4bit",
            backend="unsloth",
            load_in_4bit=True,
            batch_size=4,
            chat_template="llama-3.1",
            instruction_part=_LLAMA3_USER,
            response_part=_LLAMA3_ASSISTANT,
            **TEACHING,
        ),
        Profile(
            name="cpu-tiny",
            description="the bundled SmolLM2-135M on the CPU with TRL, a few dozen steps",
            base_model=BUNDLED,
            backend="trl",
            max_seq_length=512,
            lora_r=16,
            lora_alpha=32,
            # Checkpointing trades compute for memory; a 135M model needs no memory saving.
            gradient_checkpointing=False,
            batch_size=4,
            grad_accum=1,
            # Measured (DESIGN.md): the seed's 2e-4 is for 1B/3B GPU runs; a 135M model on a few dozen
            # CPU steps learns a taught fact at 1e-3.
            learning_rate=1e-3,
            max_steps=60,
            warmup_steps=0,
            optim="adamw_torch",
            seed=1,
            quant="q8_0",
            **TEACHING,
            steps_per_fact=50,
            max_teach_steps=200,
        ),
    )
}


def get_profile(name: str) -> Profile:
    """The named profile; ``KeyError`` says which exist."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"no profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def auto_profile_name() -> str:
    """``llama-3.2-1b`` on an NVIDIA GPU with Unsloth installed, ``cpu-tiny`` anywhere else."""
    return "llama-3.2-1b" if cuda_available() and unsloth_installed() else "cpu-tiny"


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def choose_backend(profile: Profile) -> Literal["unsloth", "trl"]:
    """The profile's backend, or for "auto": Unsloth on an NVIDIA GPU where it is installed, TRL otherwise."""
    if profile.backend != "auto":
        return profile.backend
    return "unsloth" if cuda_available() and unsloth_installed() else "trl"


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run on this machine; the message says why and what to use instead."""


def require_cuda() -> None:
    if not cuda_available():
        raise BackendUnavailable(
            "the unsloth backend trains only on an NVIDIA GPU with CUDA, and this machine has none; "
            "use the trl backend (profile cpu-tiny, or IRIS_RETRAIN_BACKEND=trl)"
        )


@dataclass(frozen=True)
class Precision:
    bf16: bool = False
    fp16: bool = False

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


def detect_precision() -> Precision:
    """bf16 where the GPU has it, fp16 on other GPUs, fp32 on the CPU (the seed runs' rule)."""
    if not cuda_available():
        return Precision()
    import torch

    return Precision(bf16=True) if torch.cuda.is_bf16_supported() else Precision(fp16=True)


def choose_quant(profile: Profile, parameters: int | None) -> str:
    """The GGUF type: the profile's, or for "auto" Q8_0 below 1B parameters and Q4_K_M from 1B.

    Measured here: Q4_K_M of the 135M SmolLM2 answers poorly; small models want Q8_0.
    """
    if profile.quant != "auto":
        return profile.quant
    return "q4_k_m" if parameters is not None and parameters >= 1_000_000_000 else "q8_0"


# --- the libraries' arguments ------------------------------------------------------


def lora_arguments(profile: Profile) -> dict[str, Any]:
    """Keyword arguments of ``peft.LoraConfig`` (TRL backend)."""
    return {
        "r": profile.lora_r,
        "lora_alpha": profile.lora_alpha,
        "lora_dropout": profile.lora_dropout,
        "target_modules": list(profile.target_modules),
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def unsloth_model_arguments(profile: Profile, model_name: str | None = None) -> dict[str, Any]:
    """Keyword arguments of ``unsloth.FastLanguageModel.from_pretrained``."""
    return {
        "model_name": model_name or profile.base_model,
        "max_seq_length": profile.max_seq_length,
        "dtype": None,  # Unsloth picks bf16 or fp16 for the GPU
        "load_in_4bit": profile.load_in_4bit,
    }


def unsloth_peft_arguments(profile: Profile) -> dict[str, Any]:
    """Keyword arguments of ``unsloth.FastLanguageModel.get_peft_model``."""
    return {
        "r": profile.lora_r,
        "target_modules": list(profile.target_modules),
        "lora_alpha": profile.lora_alpha,
        "lora_dropout": profile.lora_dropout,
        "bias": "none",
        "use_gradient_checkpointing": profile.gradient_checkpointing,
        "random_state": profile.seed,
        "use_rslora": False,
        "loftq_config": None,
    }


def _common_arguments(profile: Profile, output_dir: Path, precision: Precision) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": profile.batch_size,
        "gradient_accumulation_steps": profile.grad_accum,
        "weight_decay": profile.weight_decay,
        "lr_scheduler_type": profile.lr_scheduler,
        "optim": profile.optim,
        "logging_steps": profile.logging_steps,
        "save_strategy": "steps",
        "save_steps": profile.save_steps,
        "save_total_limit": profile.save_total_limit,
        "seed": profile.seed,
        "bf16": precision.bf16,
        "fp16": precision.fp16,
        "use_cpu": not (precision.bf16 or precision.fp16),
        "report_to": [],
        # Progress is printed by Iris's own callback, one line a step, readable in a log file.
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": profile.max_seq_length,
    }


def sft_arguments(
    profile: Profile, output_dir: Path, precision: Precision, *, backend: str = "trl"
) -> dict[str, Any]:
    """Keyword arguments of ``trl.SFTConfig`` for the SFT stage."""
    arguments = _common_arguments(profile, output_dir, precision)
    arguments.update(
        learning_rate=profile.learning_rate,
        num_train_epochs=profile.epochs,
        max_steps=profile.max_steps,
        warmup_steps=profile.warmup_steps,
        # Unsloth applies its own checkpointing through get_peft_model; TRL's would wrap it twice.
        # Said either way: TRL's default is on, which costs a 135M CPU run a fifth of its speed.
        gradient_checkpointing=bool(profile.gradient_checkpointing) and backend == "trl",
        packing=False,
    )
    if backend == "unsloth":
        # Unsloth's recipe formats each chat into one text column and masks the
        # prompts with train_on_responses_only.
        arguments.update(dataset_text_field="text", completion_only_loss=False)
    else:
        # Prompt-completion rows: TRL computes the loss on the completion (the reply) only.
        arguments.update(completion_only_loss=True)
    return arguments


def preference_arguments(profile: Profile, output_dir: Path, precision: Precision) -> dict[str, Any]:
    """Keyword arguments of ``trl.KTOConfig`` or ``trl.DPOConfig`` for the second stage."""
    arguments = _common_arguments(profile, output_dir, precision)
    arguments.update(
        learning_rate=profile.preference_learning_rate,
        max_steps=profile.preference_steps,
        warmup_steps=0,
        beta=profile.preference_beta,
        gradient_checkpointing=profile.gradient_checkpointing is True,
    )
    return arguments
