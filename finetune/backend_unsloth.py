"""The Unsloth backend: an NVIDIA GPU with CUDA, a Hub id or HF directory (not a GGUF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.base_model import resolve_base
from finetune.callbacks import teaching_callbacks
from finetune.profiles import (
    BackendUnavailable,
    Profile,
    detect_precision,
    require_cuda,
    sft_arguments,
    unsloth_model_arguments,
    unsloth_peft_arguments,
)
from finetune.runs import Progress
from finetune.stages import TrainResult, as_dataset, final_adapter, make_config, run_stages
from finetune.training_data import TrainingData


def train(
    profile: Profile, data: TrainingData, output_dir: Path, *, resume: bool, progress: Progress
) -> TrainResult:
    require_cuda()
    base = resolve_base(profile.base_model)
    if base.endswith(".gguf"):
        raise BackendUnavailable(
            "Unsloth loads Hub or HF models, not GGUF files; use the trl backend for a GGUF base"
        )
    # Unsloth patches transformers and trl when imported, so it must come first.
    import unsloth  # noqa: F401

    # isort: split
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel, PatchDPOTrainer
    from unsloth.chat_templates import get_chat_template, standardize_sharegpt, train_on_responses_only

    precision = detect_precision()
    progress(f"loading {base} with Unsloth ({precision.name}, 4-bit {profile.load_in_4bit})")
    model, tokenizer = FastLanguageModel.from_pretrained(**unsloth_model_arguments(profile, base))
    if profile.chat_template:
        tokenizer = get_chat_template(tokenizer, chat_template=profile.chat_template)

    def make_sft(model: Any, stage_dir: Path, callback: Any) -> tuple[Any, int]:
        model = FastLanguageModel.get_peft_model(model, **unsloth_peft_arguments(profile))
        mixed = data.mixed(profile.teach_weight, profile.teach_wordings)
        dataset = standardize_sharegpt(
            as_dataset([{"conversations": r["conversations"]} for r in mixed], tokenizer)
        )
        dataset = dataset.map(
            lambda batch: {
                "text": [tokenizer.apply_chat_template(c, tokenize=False) for c in batch["conversations"]]
            },
            batched=True,
        )
        trainer = SFTTrainer(
            model=model,
            processing_class=tokenizer,
            train_dataset=dataset,
            args=make_config(SFTConfig, sft_arguments(profile, stage_dir, precision, backend="unsloth")),
            callbacks=[callback, *teaching_callbacks(data, tokenizer, profile, progress)],
        )
        if profile.instruction_part and profile.response_part:
            trainer = train_on_responses_only(
                trainer, instruction_part=profile.instruction_part, response_part=profile.response_part
            )
        return trainer, len(dataset)

    def before_preference(stage: str) -> None:
        if stage == "dpo":
            PatchDPOTrainer()

    stages = run_stages(
        profile,
        data,
        output_dir,
        model,
        tokenizer,
        precision,
        resume=resume,
        progress=progress,
        make_sft=make_sft,
        before_preference=before_preference,
    )
    return TrainResult("unsloth", precision.name, final_adapter(output_dir, stages), base, stages)
