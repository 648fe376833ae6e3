"""TRL's own trainers take the exported KTO and DPO files as they are.

A tiny randomly initialised Llama (same vocabulary as the bundled SmolLM2,
whose tokenizer and chat template come from the served GGUF) trains one step on
each file: TRL applies the chat template to the conversational rows, tokenizes,
builds KL pairs (KTO) and computes a loss. Needs the train-cpu extras.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from finetune.feedback import Manifest, export_feedback
from tests.finetune.conftest import Seeded

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def tokenizer(served_gguf: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(served_gguf.parent), gguf_file=served_gguf.name)


def tiny_model(vocabulary: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocabulary,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def exported(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("trl-export")
    return out, export_feedback(seeded.url, out)


def train_one_step(trainer_name: str, rows_file: Path, tokenizer: Any, out: Path, batch: int) -> float:
    import trl
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(rows_file), split="train", cache_dir=str(out / "cache"))
    model = tiny_model(len(tokenizer))
    config_class = getattr(trl, f"{trainer_name}Config")
    trainer_class = getattr(trl, f"{trainer_name}Trainer")
    args = config_class(
        output_dir=str(out / trainer_name),
        max_steps=1,
        per_device_train_batch_size=batch,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    trainer = trainer_class(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    return float(trainer.train().training_loss)


def test_ktotrainer_trains_on_the_kto_file(
    exported: tuple[Path, Manifest], tokenizer: Any, tmp_path: Path
) -> None:
    out, manifest = exported
    assert manifest.counts["kto_up"] and manifest.counts["kto_down"]  # both labels present
    loss = train_one_step("KTO", out / "kto.jsonl", tokenizer, tmp_path, batch=4)
    assert loss == loss and loss > 0  # a number, not NaN


def test_dpotrainer_trains_on_the_dpo_file(
    exported: tuple[Path, Manifest], tokenizer: Any, tmp_path: Path
) -> None:
    out, manifest = exported
    assert manifest.counts["dpo"] >= 1
    loss = train_one_step("DPO", out / "dpo.jsonl", tokenizer, tmp_path, batch=1)
    assert loss == loss and loss > 0
