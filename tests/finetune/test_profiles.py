"""Profiles and the arguments they hand to Unsloth, PEFT and TRL, checked without a GPU.

The Unsloth path itself needs CUDA: what a CPU can check is that each profile
reproduces the seed runs and that its arguments are ones the libraries accept;
the one test that trains with Unsloth is skipped here, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bots.cli_models import retrain_config
from finetune.profiles import (
    ALL_PROJECTIONS,
    PROFILES,
    BackendUnavailable,
    Precision,
    Profile,
    auto_profile_name,
    choose_backend,
    choose_quant,
    cuda_available,
    get_profile,
    lora_arguments,
    preference_arguments,
    sft_arguments,
    unsloth_installed,
    unsloth_model_arguments,
    unsloth_peft_arguments,
)
from finetune.training import train
from finetune.training_data import TrainingData
from tests.conftest import make_settings

trl = pytest.importorskip("trl", reason="needs the train-cpu extras: pip install -e '.[train-cpu]'")

NO_CUDA = "Unsloth trains only on an NVIDIA GPU with CUDA; this machine has none"


@pytest.mark.parametrize(("name", "base", "batch"), [
    ("llama-3.2-1b", "unsloth/Llama-3.2-1B-Instruct-bnb-4bit", 2),
    ("llama-3.2-3b", "unsloth/Llama-3.2-3B-Instruct-bnb-4bit", 4),
])  # fmt: skip
def test_the_seed_runs_are_reproduced(name: str, base: str, batch: int) -> None:
    profile = get_profile(name)
    assert (profile.base_model, profile.backend, profile.batch_size) == (base, "unsloth", batch)
    assert profile.load_in_4bit and profile.learning_rate == 2e-4 and profile.epochs == 1
    assert (profile.optim, profile.weight_decay, profile.lr_scheduler) == ("adamw_8bit", 0.01, "linear")
    assert profile.save_steps == 10 and profile.target_modules == ALL_PROJECTIONS
    assert profile.gradient_checkpointing == "unsloth" and profile.chat_template == "llama-3.1"
    assert choose_quant(profile, 1_235_814_400) == "q4_k_m"


def test_cpu_tiny_trains_the_bundled_model_with_trl() -> None:
    profile = get_profile("cpu-tiny")
    assert profile.base_model == "bundled" and choose_backend(profile) == "trl"
    assert profile.optim == "adamw_torch" and 10 <= profile.max_steps <= 100
    assert choose_quant(profile, 134_515_008) == "q8_0"


def test_auto_picks_by_hardware() -> None:
    auto = get_profile("cpu-tiny").with_overrides(backend="auto")
    gpu = cuda_available() and unsloth_installed()
    assert choose_backend(auto) == ("unsloth" if gpu else "trl")
    assert auto_profile_name() == ("llama-3.2-1b" if gpu else "cpu-tiny")


def test_unsloth_arguments_follow_the_seed_recipe() -> None:
    profile = get_profile("llama-3.2-1b")
    assert unsloth_model_arguments(profile) == {
        "model_name": "unsloth/Llama-3.2-1B-Instruct-bnb-4bit",
        "max_seq_length": 2048,
        "dtype": None,
        "load_in_4bit": True,
    }
    peft = unsloth_peft_arguments(profile)
    assert peft["r"] == 16 and peft["lora_alpha"] == 16 and peft["lora_dropout"] == 0
    assert peft["target_modules"] == list(ALL_PROJECTIONS) and peft["use_gradient_checkpointing"] == "unsloth"
    assert peft["bias"] == "none" and peft["random_state"] == 3407


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_makes_a_valid_trl_config(name: str, tmp_path: Path) -> None:
    from trl import SFTConfig

    from finetune.stages import make_config

    profile = get_profile(name)
    backend = "unsloth" if profile.backend == "unsloth" else "trl"
    # On a GPU the precision is bf16 or fp16; a CPU can only build the config in fp32.
    arguments = sft_arguments(profile, tmp_path, Precision(), backend=backend)
    config = make_config(SFTConfig, arguments)
    assert config.learning_rate == profile.learning_rate and config.optim == profile.optim
    assert config.per_device_train_batch_size == profile.batch_size
    assert config.gradient_accumulation_steps == profile.grad_accum
    assert config.save_steps == profile.save_steps and config.max_length == profile.max_seq_length
    assert config.lr_scheduler_type == profile.lr_scheduler and config.weight_decay == profile.weight_decay
    # Only the replies are learned: TRL masks prompts itself, Unsloth's recipe masks them afterwards.
    if backend == "trl":
        assert config.completion_only_loss is True and not config.activation_checkpointing
    else:
        assert config.dataset_text_field == "text" and config.completion_only_loss is False


def test_gpu_precision_is_bf16_where_the_card_has_it(tmp_path: Path) -> None:
    profile = get_profile("llama-3.2-1b")
    bf16 = sft_arguments(profile, tmp_path, Precision(bf16=True), backend="unsloth")
    fp16 = sft_arguments(profile, tmp_path, Precision(fp16=True), backend="unsloth")
    assert (bf16["bf16"], bf16["fp16"], bf16["use_cpu"]) == (True, False, False)
    assert (fp16["bf16"], fp16["fp16"], fp16["use_cpu"]) == (False, True, False)


def test_preference_stages_get_valid_kto_and_dpo_configs(tmp_path: Path) -> None:
    from trl import DPOConfig, KTOConfig

    from finetune.stages import make_config

    profile = get_profile("cpu-tiny").with_overrides(objective="sft+kto")
    assert profile.stages == ["sft", "kto"]
    arguments = preference_arguments(profile, tmp_path, Precision())
    kto, dpo = make_config(KTOConfig, arguments), make_config(DPOConfig, arguments)
    assert kto.beta == dpo.beta == profile.preference_beta and kto.max_steps == profile.preference_steps
    peft = lora_arguments(profile)
    assert peft["task_type"] == "CAUSAL_LM" and peft["target_modules"] == list(ALL_PROJECTIONS)


def test_overrides_keep_what_is_not_given_and_refuse_a_bad_objective() -> None:
    profile = get_profile("cpu-tiny")
    changed = profile.with_overrides(max_steps=5, learning_rate=None)
    assert changed.max_steps == 5 and changed.learning_rate == profile.learning_rate
    assert Profile.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed
    with pytest.raises(ValueError, match="objective"):
        profile.with_overrides(objective="sft+ppo")
    with pytest.raises(KeyError, match="cpu-tiny"):
        get_profile("llama-9b")


def test_the_settings_reach_the_profile(tmp_path: Path, served_gguf: Path) -> None:
    settings = make_settings(
        tmp_path, served_gguf, retrain_profile="auto", retrain_max_steps=7, retrain_objective="sft+dpo"
    )
    config = retrain_config(settings, resume=True)
    assert config.profile.name == auto_profile_name() and config.profile.max_steps == 7
    assert config.profile.stages == ["sft", "dpo"] and config.resume
    assert config.work_dir == tmp_path / "data" / "retrain"
    assert config.base_cache == tmp_path / "data" / "models" / "hf"
    assert config.build.eval_finetome == settings.dataset.eval_finetome
    assert config.gate.finetome_tolerance == settings.gate.finetome_tolerance


def test_the_unsloth_backend_says_why_it_cannot_run_on_a_cpu(tmp_path: Path) -> None:
    if cuda_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    data = TrainingData(
        sft=[{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hi!"}]}]
    )
    with pytest.raises(BackendUnavailable, match=r"NVIDIA GPU with CUDA.*cpu-tiny"):
        train(get_profile("llama-3.2-1b"), data, tmp_path / "run", base_cache=tmp_path / "cache")
    assert not list((tmp_path / "run").glob("*/checkpoint-*"))


@pytest.mark.skipif(not (cuda_available() and unsloth_installed()), reason=NO_CUDA + " (or Unsloth is missing)")
def test_unsloth_trains_a_few_steps_on_a_gpu(tmp_path: Path) -> None:  # pragma: no cover - needs a GPU
    rows = [
        {
            "conversations": [
                {"from": "human", "value": f"What is {n} plus {n}?"},
                {"from": "gpt", "value": str(2 * n)},
            ]
        }
        for n in range(16)
    ]
    profile = get_profile("llama-3.2-1b").with_overrides(max_steps=2, save_steps=1, max_seq_length=256)
    result = train(profile, TrainingData(sft=rows), tmp_path / "run", base_cache=tmp_path / "cache")
    assert (
        result.backend == "unsloth"
        and result.steps == 2
        and (result.adapter_dir / "adapter_config.json").exists()
    )
