"""What a training run learns from: the SFT rows with the taught facts mixed in, and the preference rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune import jsonl
from finetune.profiles import Profile
from finetune.rows import (
    DpoExample,
    FineTomeRow,
    KtoExample,
    PromptCompletion,
    as_messages,
    last_user_text,
    prompt_and_answer,
    to_prompt_completion,
)
from finetune.teaching import Fact, training_rows


def _rows(path: Path | None) -> list[dict[str, Any]]:
    return jsonl.read(path, missing_ok=True) if path else []


@dataclass
class TrainingData:
    """What a run trains on: FineTome-shaped SFT rows, and KTO / DPO rows for a preference stage."""

    sft: list[FineTomeRow]
    kto: list[KtoExample] = field(default_factory=list)
    dpo: list[DpoExample] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)  # what approved corrections taught (finetune.teaching)

    @classmethod
    def from_files(
        cls,
        train: Path,
        kto: Path | None = None,
        dpo: Path | None = None,
        held_out: Iterable[Mapping[str, Any]] = (),
        facts: list[Fact] | None = None,
    ) -> TrainingData:
        """Read the build's train.jsonl and the export's kto/dpo.jsonl.

        KTO and DPO rows whose question is one of the held-out evaluation
        questions are left out, so the gate measures on questions no stage saw.
        A prompt or reply may be a string or role/content messages; both become messages.
        """
        held = set()
        for row in held_out:
            pair = prompt_and_answer(row)
            if pair:
                held.add(last_user_text(pair[0]))
        kto_rows: list[KtoExample] = [
            {
                "prompt": as_messages(row["prompt"], "user"),
                "completion": as_messages(row["completion"], "assistant"),
                "label": bool(row["label"]),
            }
            for row in _rows(kto)
            if last_user_text(row["prompt"]) not in held
        ]
        dpo_rows: list[DpoExample] = [
            {
                "prompt": as_messages(row["prompt"], "user"),
                "chosen": as_messages(row["chosen"], "assistant"),
                "rejected": as_messages(row["rejected"], "assistant"),
            }
            for row in _rows(dpo)
            if last_user_text(row["prompt"]) not in held
        ]
        return cls(
            sft=jsonl.read_finetome(train, missing_ok=True), kto=kto_rows, dpo=dpo_rows, facts=list(facts or [])
        )

    def mixed(self, weight: float = 0.0, wordings: bool = True) -> list[FineTomeRow]:
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
        return list(self.kto)

    def dpo_rows(self) -> list[DpoExample]:
        return list(self.dpo)


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
