"""A run's stages (sft, kto, dpo) on either backend: results, checkpoints, resumption, preference trainers.

Each stage checkpoints into its own folder and writes ``done.json`` with its
result once its adapter is saved, so a resumed run loads finished stages and
continues an unfinished one from its last complete checkpoint.

A preference stage (KTO or DPO) continues the adapter the stage before it
saved, and TRL measures it against a frozen copy of that adapter (its "ref"
adapter); the result records both, with the rows by kind and TRL's key figures,
so the report can say what each stage did.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from core.files import atomic_write
from finetune.callbacks import progress_callback
from finetune.profiles import Precision, Profile, lora_arguments, preference_arguments
from finetune.runs import Progress
from finetune.training_data import TrainingData


@dataclass
class StageResult:
    """One stage of a run (sft, kto or dpo)."""

    name: str
    rows: int
    steps: int
    seconds: float
    steps_this_process: int = 0
    resumed_from: str | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    skipped: str | None = None
    examples: dict[str, int] = field(default_factory=dict)  # rows by kind: "up"/"down" (KTO), "pairs" (DPO)
    started_from: str | None = None  # the adapter this stage continued; None: a new LoRA on the base
    reference: str | None = None  # what a preference stage's loss compared the model with
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)  # TRL's KEY_METRICS: first, last

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.steps_this_process if self.steps_this_process else None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON holds them, and the pace a report shows (reading a stage back ignores it)."""
        fields: dict[str, Any] = TypeAdapter(StageResult).dump_python(self, mode="json")
        return fields | {
            "seconds": round(self.seconds, 2),
            "seconds_per_step": round(self.seconds_per_step, 3) if self.seconds_per_step else None,
        }


# What TRL 1.x logs each step that says what a preference stage did (KTOTrainer / DPOTrainer.log).
KEY_METRICS = {
    "kto": ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl"),
    "dpo": ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"),
}


def first_and_last(history: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Each key's first and last value in a trainer's ``log_history`` of steps (never logged: left out)."""
    found: dict[str, tuple[float, float]] = {}
    for key in keys:
        values = [float(entry[key]) for entry in history if key in entry and "loss" in entry]
        if values:
            found[key] = (values[0], values[-1])
    return found


@dataclass
class TrainResult:
    backend: str
    precision: str
    adapter_dir: Path
    base: str
    stages: list[StageResult]

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    @property
    def final_loss(self) -> float | None:
        losses = [loss for stage in self.stages for _, loss in stage.losses]
        return losses[-1] if losses else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "adapter_dir": str(self.adapter_dir),
            "base": self.base,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "final_loss": self.final_loss,
            "resumed_from": next((s.resumed_from for s in self.stages if s.resumed_from), None),
            "stages": [stage.to_dict() for stage in self.stages],
        }


def last_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete checkpoint: transformers writes ``trainer_state.json`` last."""
    candidates = []
    for path in stage_dir.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit():
            candidates.append((int(suffix), path))
    for _step, path in sorted(candidates, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue  # killed while writing this one
        return path
    return None


def _done_file(stage_dir: Path) -> Path:
    return stage_dir / "done.json"


def _run_stage(
    name: str,
    trainer: Any,
    stage_dir: Path,
    rows: int,
    resume: bool,
    progress: Progress,
    **recorded: Any,
) -> StageResult:
    """Train (or continue) one stage, save its adapter and ``done.json``; ``recorded``: StageResult's
    fields known before training (examples, started_from, reference)."""
    checkpoint = last_checkpoint(stage_dir) if resume else None
    if checkpoint is not None:
        progress(f"{name}: resuming from {checkpoint.name}")
    elif stage_dir.exists():
        # A fresh start must not pick up another attempt's checkpoints.
        for old in stage_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
    began = time.perf_counter()
    start_step = int(checkpoint.name.removeprefix("checkpoint-")) if checkpoint else 0
    from transformers import PrinterCallback

    # With tqdm off, transformers prints every log dict; the progress callback says it better.
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - began
    trainer.save_model(str(stage_dir / "adapter"))
    history = trainer.state.log_history
    result = StageResult(
        name=name,
        rows=rows,
        steps=trainer.state.global_step,
        seconds=seconds,
        steps_this_process=trainer.state.global_step - start_step,
        resumed_from=checkpoint.name if checkpoint else None,
        losses=[(int(entry["step"]), float(entry["loss"])) for entry in history if "loss" in entry],
        metrics=first_and_last(history, KEY_METRICS.get(name, ())),
        **recorded,
    )
    # Whole or absent: a half-written done.json would fail every resume of this run.
    atomic_write(_done_file(stage_dir), json.dumps(result.to_dict(), indent=1).encode())
    # The adapter is saved; the checkpoints (optimizer state included) are no longer needed.
    for old in stage_dir.glob("checkpoint-*"):
        shutil.rmtree(old, ignore_errors=True)
    return result


def _finished_stage(stage_dir: Path) -> StageResult | None:
    done = _done_file(stage_dir)
    if done.exists() and (stage_dir / "adapter").exists():
        return TypeAdapter(StageResult).validate_json(done.read_text())
    return None


def make_config(config_class: Any, arguments: dict[str, Any]) -> Any:
    """A TRL config from the profile's arguments, in the spelling this transformers version uses.

    transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing``
    and warns about the old name, which TRL's configs set by default.
    """
    import dataclasses

    names = {field.name for field in dataclasses.fields(config_class)}
    arguments = dict(arguments)
    if "activation_checkpointing" in names and "gradient_checkpointing" in arguments:
        arguments["activation_checkpointing"] = arguments.pop("gradient_checkpointing")
        arguments["gradient_checkpointing"] = None  # only the new name counts now
    return config_class(**arguments)


def as_dataset(rows: Sequence[Mapping[str, object]], tokenizer: Any) -> Any:
    """The rows as a ``datasets.Dataset``, no text in them spelling one of ``tokenizer``'s special tokens.

    TRL and Unsloth render each row with the chat template and tokenize the result
    with special tokens parsed (a tokenizer matches its special tokens' strings
    anywhere in a text), so a person's ``<|im_end|>`` would train the model on a
    turn it never had.
    """
    from datasets import Dataset

    plain = plain_text(tokenizer)
    return Dataset.from_list([_plain_row(row, plain) for row in rows])


def plain_text(tokenizer: Any) -> Callable[[str], str]:
    """Breaks ``tokenizer``'s special-token strings in a text: a zero-width space after the first character."""
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    specials = {*tokenizer.all_special_tokens, *(token.content for token in added if token.special)}
    specials = {text for text in specials if len(text) > 1}
    if not specials:
        return lambda text: text
    markup = re.compile("|".join(re.escape(text) for text in sorted(specials, key=len, reverse=True)))
    return lambda text: markup.sub(lambda found: found[0][0] + "\u200b" + found[0][1:], text)


def _plain_row(row: Mapping[str, object], plain: Callable[[str], str]) -> dict[str, object]:
    """A row with the text of its messages (role/content or FineTome's from/value) made plain."""

    def message(value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        return {
            key: plain(text) if key in ("content", "value") and isinstance(text, str) else text
            for key, text in value.items()
        }

    return {
        key: [message(m) for m in value] if isinstance(value, list) else value for key, value in row.items()
    }


def _with_adapter(model: Any, adapter_dir: Path) -> Any:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter_dir), adapter_name="default", is_trainable=True)
        return model
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def final_adapter(output_dir: Path, stages: list[StageResult]) -> Path:
    trained = [stage for stage in stages if stage.skipped is None]
    if not trained:
        raise ValueError("no stage trained anything")
    return output_dir / trained[-1].name / "adapter"


def run_stages(
    profile: Profile,
    data: TrainingData,
    output_dir: Path,
    model: Any,
    tokenizer: Any,
    precision: Precision,
    *,
    resume: bool,
    progress: Progress,
    make_sft: Callable[[Any, Path, Any], tuple[Any, int]],
    before_preference: Callable[[str], None] | None = None,
) -> list[StageResult]:
    """Run the profile's stages in order on either backend; ``make_sft`` builds the backend's SFT trainer.

    A stage finished in an earlier attempt is loaded, not trained again. A
    preference stage with nothing to learn from is skipped with its reason, said
    before anything trains; an objective with no stage left to train is refused
    then (ValueError), so no minutes are spent on a run that cannot end.
    """
    gaps = {stage: gap for stage in profile.stages if (gap := preference_gap(stage, data)) is not None}
    for stage, gap in gaps.items():
        progress(f"{stage}: will be skipped ({gap})")
    if len(gaps) == len(profile.stages):
        raise ValueError(f"objective {profile.objective!r} has nothing to train: {'; '.join(gaps.values())}")
    stages: list[StageResult] = []
    previous: Path | None = None  # the adapter the next stage continues
    for stage in profile.stages:
        stage_dir = output_dir / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        finished = _finished_stage(stage_dir) if resume else None
        if finished is not None:
            progress(f"{stage}: finished in an earlier attempt ({finished.steps} steps)")
            model = _with_adapter(model, stage_dir / "adapter")
            stages.append(finished)
            previous = stage_dir / "adapter"
            continue
        callback = progress_callback(stage, progress)
        recorded: dict[str, Any] = {"started_from": str(previous) if previous else None}
        if stage == "sft":
            trainer, rows = make_sft(model, stage_dir, callback)
        else:
            row_list = data.kto_rows() if stage == "kto" else data.dpo_rows()
            recorded["examples"] = examples(stage, row_list)
            if stage in gaps:
                progress(f"{stage}: skipped ({gaps[stage]})")
                stages.append(StageResult(stage, len(row_list), 0, 0.0, skipped=gaps[stage], **recorded))
                continue
            if before_preference is not None:
                before_preference(stage)
            trainer = _preference_trainer(stage, profile, model, tokenizer, row_list, stage_dir, precision)
            trainer.add_callback(callback)
            recorded["reference"] = reference(trainer.model, previous.parent.name if previous else None)
            rows = len(row_list)
        steps = trainer.args.max_steps if trainer.args.max_steps > 0 else "?"
        progress(
            f"{stage}: {rows} rows, {steps} steps"
            + (f"; reference: {recorded['reference']}" if stage != "sft" else "")
        )
        stages.append(_run_stage(stage, trainer, stage_dir, rows, resume, progress, **recorded))
        model = trainer.model
        previous = stage_dir / "adapter"
    return stages


def preference_gap(stage: str, data: TrainingData) -> str | None:
    """Why a preference stage cannot train on ``data``, for the admin; None when it can (and for sft)."""
    if stage == "kto":
        kinds = examples("kto", data.kto_rows())
        if not kinds["up"] or not kinds["down"]:
            return (
                f"KTO learns from 👍 against 👎 and needs both; the feedback has {kinds['up']} 👍 "
                f"and {kinds['down']} 👎 it may train on"
            )
    if stage == "dpo" and not data.dpo_rows():
        return "DPO needs approved corrections (chosen) of the bot's replies (rejected); there are none yet"
    return None


def examples(stage: str, rows: Sequence[Mapping[str, object]]) -> dict[str, int]:
    """A preference stage's rows by kind: 👍 ("up") and 👎 ("down") for KTO, pairs for DPO."""
    if stage == "kto":
        up = sum(1 for row in rows if row["label"])
        return {"up": up, "down": len(rows) - up}
    return {"pairs": len(rows)}


def reference(model: Any, previous_stage: str | None) -> str:
    """What TRL measures a preference stage against, read from the model it prepared.

    TRL 1.x copies a PEFT model's trained adapter into a frozen adapter named
    "ref" and computes the reference log-probabilities with it; a model that
    came without an adapter (objective ``dpo`` alone) has its new adapter
    disabled for them instead: the bare base.
    """
    if "ref" in getattr(model, "peft_config", {}):
        return f"a frozen copy of the {previous_stage} adapter (TRL's 'ref' adapter)"
    return "the base model (the adapter disabled)"


def _preference_trainer(
    stage: str,
    profile: Profile,
    model: Any,
    tokenizer: Any,
    rows: Sequence[Mapping[str, object]],
    stage_dir: Path,
    precision: Precision,
) -> Any:
    """The KTO or DPO trainer for the adapter trained so far (a new LoRA when there is none)."""
    from peft import LoraConfig, PeftModel

    peft_config = None if isinstance(model, PeftModel) else LoraConfig(**lora_arguments(profile))
    arguments = preference_arguments(profile, stage_dir, precision)
    if stage == "kto":
        from trl import KTOConfig, KTOTrainer

        config: Any = make_config(KTOConfig, arguments)
        trainer_class: Any = KTOTrainer
    else:
        from trl import DPOConfig, DPOTrainer

        config = make_config(DPOConfig, arguments)
        trainer_class = DPOTrainer
    return trainer_class(
        model=model,
        args=config,
        train_dataset=as_dataset(rows, tokenizer),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
