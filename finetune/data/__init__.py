"""Data that ships with Iris: a FineTome-shaped sample for tests and the offline demo.

``FINETOME_SAMPLE`` is written by ``python -m finetune.data.make_sample`` (no download).
"""

from __future__ import annotations

from pathlib import Path

FINETOME_SAMPLE = Path(__file__).with_name("finetome_sample.jsonl")
