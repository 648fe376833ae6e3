"""Opening FineTome-100k: the sample Iris ships, a local parquet/JSONL copy, or the Hub."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune import jsonl


class FineTomeUnavailable(RuntimeError):
    """The FineTome source could not be read; the message says what to do instead."""


@dataclass(frozen=True)
class FineTomeSource:
    """FineTome rows that can be filtered by score and drawn by index without loading them all."""

    size: int
    scores: list[float | None]
    rows: Callable[[list[int]], list[dict[str, Any]]]


def load_finetome(source: str) -> FineTomeSource:
    """Open FineTome: ``sample`` (shipped), a local parquet/JSONL file or folder, or a Hub dataset name."""
    from finetune.data import FINETOME_SAMPLE

    path = FINETOME_SAMPLE if source == "sample" else Path(source).expanduser()
    if path.exists():
        rows = _read_local(path)
        return FineTomeSource(len(rows), [row.get("score") for row in rows], lambda ids: [rows[i] for i in ids])
    if path.suffix in (".jsonl", ".json", ".parquet") or source.startswith((".", "/", "~")):
        raise FineTomeUnavailable(f"{source}: no such file")
    return _load_hub(source)


def _read_local(path: Path) -> list[dict[str, Any]]:
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet"))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise FineTomeUnavailable(f"{path}: no .parquet or .jsonl files in this folder")
    rows: list[dict[str, Any]] = []
    for file in files:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(file).to_pylist())
        else:
            rows.extend(jsonl.read(file))
    return rows


def _load_hub(name: str) -> FineTomeSource:
    import datasets

    try:
        table = datasets.load_dataset(name, split="train")
    except Exception as error:  # the Hub client raises many kinds when offline
        raise FineTomeUnavailable(
            f"could not load {name!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            "Without network, pass a local parquet/JSONL path, or 'sample' for the one shipped with Iris."
        ) from error
    scores = table["score"] if "score" in table.column_names else [None] * len(table)
    return FineTomeSource(len(table), list(scores), lambda ids: table.select(ids).to_list())
