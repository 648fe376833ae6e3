"""Every GGUF Iris loads stays off llama.cpp's extra CPU buffer types, on any CPU.

On a CPU with Intel AMX, llama.cpp repacks Q8_0/Q4 weights into its AMX buffer
type, whose matrix multiply crashes the process on the first decode
(ggml-org/llama.cpp#20824). Iris loads with the extra buffer types off
(``core.gguf.open_gguf``). These tests read llama.cpp's own load log, so
they fail on any x86 (AVX2) or Arm machine if that is undone, not only on an AMX
one: there, llama.cpp's defaults put a Q4_0 model into its repacked-weight buffer
(``CPU_REPACK``), the same extra-buffer path the AMX buffer takes.
"""

from __future__ import annotations

import logging
import platform
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.domain import ModelVersion
from core.generation import LlamaGenerator, LlmConfig
from core.gguf import bundled_gguf_path, open_gguf, requantize
from finetune.gate import check_answers

PLAIN_BUFFERS = {"CPU", "CPU_Mapped"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["q4_0", "q8_0"])
def quantized(request: pytest.FixtureRequest, models_dir: Path) -> Path:
    quant: str = request.param
    return requantize(bundled_gguf_path(), models_dir / f"smollm2-135m-instruct-{quant}.gguf", quant)


@pytest.fixture
def load_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="llama.cpp"):
        yield caplog


def weight_buffers(log: pytest.LogCaptureFixture) -> set[str]:
    """The buffer types llama.cpp says it put the model's weights in."""
    lines = (record.getMessage() for record in log.records if record.name == "llama.cpp")
    return {match[1] for line in lines if (match := re.search(r"(\S+) model buffer size", line))}


def test_the_bots_loader_keeps_weights_in_plain_cpu_buffers(
    quantized: Path, load_log: pytest.LogCaptureFixture
) -> None:
    model = ModelVersion(id=0, name=quantized.stem, gguf_path=str(quantized))
    generator = LlamaGenerator(registry=None, fallback=model, config=LlmConfig(context_tokens=512))
    generator.load()
    used = weight_buffers(load_log)
    assert used and used <= PLAIN_BUFFERS, used


def test_the_gate_loads_the_same_way_and_a_quantized_model_answers(
    quantized: Path, load_log: pytest.LogCaptureFixture
) -> None:
    assert check_answers(quantized, "What is the capital of France?").strip()
    used = weight_buffers(load_log)
    assert used and used <= PLAIN_BUFFERS, used


def test_llama_cpp_defaults_would_take_an_extra_buffer(
    models_dir: Path, load_log: pytest.LogCaptureFixture
) -> None:
    """The control: the two tests above can fail here, because the defaults do use one."""
    from llama_cpp import Llama

    q4_0 = requantize(bundled_gguf_path(), models_dir / "smollm2-135m-instruct-q4_0.gguf", "q4_0")
    open_gguf(q4_0, n_ctx=256).close()  # routes llama.cpp's log to Python logging
    load_log.clear()
    Llama(model_path=str(q4_0), n_ctx=256, verbose=False).close()
    extra = weight_buffers(load_log) - PLAIN_BUFFERS
    if not extra:
        pytest.skip(f"llama.cpp offers no extra buffer type for Q4_0 on this CPU ({platform.machine()})")
    assert extra & {"CPU_REPACK", "AMX"}, extra


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 feature names")
def test_llama_cpp_is_built_for_a_fixed_feature_set_without_amx() -> None:
    """The Makefile builds llama.cpp without -march=native: AVX2, no AVX-512, no AMX.

    A native build on a CPU without AVX-512 or AMX reports the same, so this test
    guards the build only on machines that have them; the buffer tests above guard
    the crash everywhere.
    """
    import llama_cpp

    features = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in features, features
    assert not re.search(r"(AMX_\w+|AVX512\w*) = 1", features), features


def test_nothing_but_open_gguf_constructs_a_llama_cpp_model() -> None:
    """A new ``Llama(...)`` call elsewhere would bypass the switch (the bench's control is on purpose)."""
    allowed = {ROOT / "core/gguf.py", ROOT / "bench/buffer_types.py", Path(__file__)}
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("core", "storage", "bots", "finetune", "bench", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bLlama\(", line) and "vocab_only=True" not in line
    ]
    assert found == []
