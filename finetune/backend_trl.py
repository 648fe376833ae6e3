"""The TRL backend: TRL + PEFT on the CPU, or on a GPU without Unsloth.

It trains a Hub id, an HF directory or a GGUF (converted once by ``finetune.base_model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.base_model import prepare_base
from finetune.callbacks import teaching_callbacks
from finetune.profiles import Profile, detect_precision, lora_arguments, sft_arguments
from finetune.runs import Progress
from finetune.stages import TrainResult, as_dataset, final_adapter, make_config, run_stages
from finetune.training_data import TrainingData


def train(
    profile: Profile,
    data: TrainingData,
    output_dir: Path,
    *,
    base_cache: Path,
    resume: bool,
    progress: Progress,
) -> TrainResult:
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    precision = detect_precision()
    base = prepare_base(profile.base_model, base_cache, progress)
    progress(f"loading {base} ({precision.name}, backend trl)")
    tokenizer = AutoTokenizer.from_pretrained(base)
    dtype = torch.bfloat16 if precision.bf16 else torch.float16 if precision.fp16 else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)

    def make_sft(model: Any, stage_dir: Path, callback: Any) -> tuple[Any, int]:
        rows = data.sft_rows(profile.teach_weight, profile.teach_wordings)
        if not rows:
            raise ValueError("no training rows with a reply to learn from")
        trainer = SFTTrainer(
            model=model,
            args=make_config(SFTConfig, sft_arguments(profile, stage_dir, precision)),
            train_dataset=as_dataset(rows, tokenizer),
            processing_class=tokenizer,
            peft_config=None if isinstance(model, PeftModel) else LoraConfig(**lora_arguments(profile)),
            callbacks=[callback, *teaching_callbacks(data, tokenizer, profile, progress)],
        )
        return trainer, len(rows)

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
    )
    adapter = final_adapter(output_dir, stages)
    return TrainResult("trl", precision.name, adapter, base, stages)
