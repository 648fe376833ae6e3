"""JSON Lines, as every row file in ``finetune`` is kept: one JSON object a line, UTF-8.

Exports, datasets, the probe and the FineTome sample are all read and written
here. A file is replaced whole (``core.files.atomic_write``: written beside it,
fsynced, then renamed over it), so a reader, a crash or a full disk never leaves
half of one; row files hold people's words, so they are created 0600.

    from finetune import jsonl
    digest = jsonl.write(path, rows)
    rows = jsonl.read(path, missing_ok=True)
    split = jsonl.read_finetome(dataset / "eval_feedback.jsonl")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from core.files import atomic_write

if TYPE_CHECKING:
    from finetune.rows import FineTomeRow


def read(path: Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The rows of a JSONL file (blank lines skipped); with ``missing_ok`` a missing file has none."""
    if missing_ok and not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def read_finetome(path: Path, *, missing_ok: bool = False) -> list[FineTomeRow]:
    """A FineTome-shaped file ``finetune`` wrote (a dataset split, ``train.jsonl``): its rows as written.

    They were checked when the dataset was built (``finetune.dataset``) and are not checked again.
    """
    return cast("list[FineTomeRow]", read(path, missing_ok=missing_ok))


def count(path: Path) -> int:
    """How many rows a JSONL file holds, without parsing them (0 for a missing file)."""
    if not path.exists():
        return 0
    with path.open(encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


def write(path: Path, rows: Iterable[Mapping[str, Any]]) -> str:
    """Write one JSON object per line (UTF-8, keys in the order given); return the file's sha256."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    replace_file(path, data)
    return hashlib.sha256(data).hexdigest()


def replace_file(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` in one rename: readers see the old file or the new one, never half.

    Created 0600: what ``finetune`` writes holds people's words. On a full disk or a
    read-only folder it raises ``OSError`` naming ``path``, and ``path`` is unchanged.
    """
    atomic_write(path, data, private=True)
