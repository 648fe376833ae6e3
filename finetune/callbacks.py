"""The trainer callbacks of every stage: a progress line a logged step, and the stop at the taught target."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from finetune.profiles import Profile
from finetune.runs import Progress
from finetune.teaching import Fact
from finetune.training_data import TrainingData


def progress_callback(stage: str, progress: Progress) -> Any:
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
            record_loss(Path(args.output_dir), state.global_step, state.max_steps, float(logs["loss"]))

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress(f"{stage} checkpoint-{state.global_step} saved")

    return StepProgress()


LOSSES = "losses.jsonl"  # in a stage's folder: the loss of each logged step, read while the run goes on


def record_loss(stage_dir: Path, step: int, max_steps: int, loss: float) -> None:
    """Append one step's loss to the stage's ``losses.jsonl``, so a page can draw it before the stage
    ends (the stage's ``done.json`` holds them only at its end); a resumed stage repeats some steps."""
    line = json.dumps({"step": step, "max_steps": max_steps, "loss": round(loss, 6)})
    with (stage_dir / LOSSES).open("a", encoding="utf-8") as file:
        file.write(line + "\n")


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

    from finetune.stages import plain_text  # here: finetune.stages imports this module

    plain = plain_text(tokenizer)  # as the rows were trained (finetune.stages.as_dataset)
    encoded = []
    for n, question, answer in taught_pairs(facts, profile.teach_wordings):
        user = [{"role": "user", "content": plain(question)}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": plain(answer)}], tokenize=False
        )
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


def teaching_callbacks(data: TrainingData, tokenizer: Any, profile: Profile, progress: Progress) -> list[Any]:
    if profile.teach_target_nll <= 0 or not data.facts:
        return []
    return [_teaching_target(data.facts, tokenizer, profile, progress)]
