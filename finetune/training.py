"""LoRA training: TRL + PEFT on the CPU (or a GPU without Unsloth), Unsloth on an NVIDIA GPU.

Both backends train the same thing: a LoRA adapter on every attention and MLP
projection, with the loss on the replies only, then optionally a preference
stage (KTO on 👍/👎, DPO on correction pairs) on the same adapter. Each stage
checkpoints every ``save_steps`` steps into its own folder, so a killed run
resumes from its last complete checkpoint. torch, transformers, trl, peft and
unsloth are imported inside the functions that use them.

What a run learns from is ``finetune.training_data`` (rows built by
``finetune.rows``), the base it trains ``finetune.base_model``, the stages and
their results ``finetune.stages`` (callbacks in ``finetune.callbacks``), and each
backend its own module: ``finetune.backend_trl``, ``finetune.backend_unsloth``.

The pipeline calls this (``finetune.retrain``); on its own:

    python -c "from finetune.training import train; ..."   # see finetune/retrain.py
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from finetune import backend_trl, backend_unsloth
from finetune.profiles import Profile, choose_backend, cuda_available
from finetune.runs import Progress
from finetune.stages import TrainResult
from finetune.training_data import TrainingData, teaching_steps

log = logging.getLogger(__name__)


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
        return backend_unsloth.train(profile, data, output_dir, resume=resume, progress=progress)
    return backend_trl.train(profile, data, output_dir, base_cache=base_cache, resume=resume, progress=progress)


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
