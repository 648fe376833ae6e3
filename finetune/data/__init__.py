"""Data that ships with Iris: a FineTome-shaped sample (synthetic, made by rules) and the forgetting probe.

``FINETOME_SAMPLE`` is written by ``python -m finetune.data.make_sample`` (no download).
"""

from __future__ import annotations

from pathlib import Path

FINETOME_SAMPLE = Path(__file__).with_name("finetome_sample.jsonl")
# General-knowledge questions with checkable answers: the gate's forgetting probe (finetune.probe).
PROBE = Path(__file__).with_name("probe.jsonl")
