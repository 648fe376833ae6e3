"""Exact and near-duplicate detection for chat examples.

Exact: the same words in the same turns, ignoring case and spacing. Near: MinHash
estimates of the Jaccard similarity of character 5-grams, computed separately
for what was asked and what was answered; two examples are near-duplicates when
*both* sides reach the threshold. So "What is photosynthesis?" answered with
"mainly" or "mostly" is one example, while the same answer to a differently
worded question (a paraphrase worth learning) stays.

Candidates come from locality-sensitive hashing on the answer signature (16
bands of 4), so the work grows with the number of examples, not its square.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

NUM_PERM = 64
BANDS = 16
SHINGLE = 5


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def sides(conversations: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """(everything asked, everything answered), normalized; system prompts are left out."""
    asked = [normalize(t["value"]) for t in conversations if t["from"] == "human"]
    answered = [normalize(t["value"]) for t in conversations if t["from"] == "gpt"]
    return "\n".join(asked), "\n".join(answered)


def exact_key(conversations: Sequence[dict[str, Any]]) -> str:
    asked, answered = sides(conversations)
    return hashlib.sha256(f"{asked}\0{answered}".encode()).hexdigest()


class NearDuplicates:
    """Keeps a set of accepted examples and tells whether a new one nearly repeats one of them."""

    def __init__(self, threshold: float, seed: int = 0) -> None:
        import numpy as np

        self.threshold = threshold
        rng = np.random.default_rng(seed)
        self._seeds = rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
        self._powers = np.array([257**k for k in reversed(range(SHINGLE))], dtype=np.uint64)
        self._buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        self._kept: list[tuple[Any, Any]] = []

    def signature(self, text: str) -> Any:
        import numpy as np
        from numpy.lib.stride_tricks import sliding_window_view

        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        if len(data) < SHINGLE:
            data = np.pad(data, (0, SHINGLE - len(data)))
        # 5 bytes in base 257 stay below 2**41: every shingle gets its own value.
        shingles = np.unique(sliding_window_view(data, SHINGLE).astype(np.uint64) @ self._powers)
        # One strong mix per permutation: cheaper hash families (multiply-shift)
        # underestimated similarity badly on these very regular shingle values.
        return _mix(_mix(shingles)[None, :] ^ self._seeds[:, None]).min(axis=1)

    def add(self, conversations: Sequence[dict[str, Any]]) -> bool:
        """Accept the example unless it nearly repeats an accepted one; return whether it was accepted."""
        asked, answered = sides(conversations)
        question, answer = self.signature(asked), self.signature(answered)
        bands = self._bands(answer)
        for index in {i for band in bands for i in self._buckets.get(band, ())}:
            kept_question, kept_answer = self._kept[index]
            if self.similar(answer, kept_answer) and self.similar(question, kept_question):
                return False
        self._kept.append((question, answer))
        for band in bands:
            self._buckets[band].append(len(self._kept) - 1)
        return True

    def similar(self, one: Any, other: Any) -> bool:
        return float((one == other).mean()) >= self.threshold

    @staticmethod
    def _bands(signature: Any) -> Iterable[tuple[int, bytes]]:
        rows = NUM_PERM // BANDS
        return [(band, signature[band * rows : (band + 1) * rows].tobytes()) for band in range(BANDS)]


def _mix(values: Any) -> Any:
    """splitmix64's finalizer, elementwise on a uint64 array (wrap-around is intended)."""
    import numpy as np

    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def jaccard(one: str, other: str) -> float:
    """The exact Jaccard similarity of two texts' character 5-grams (for tests and reports)."""
    a, b = _shingles(normalize(one)), _shingles(normalize(other))
    return len(a & b) / len(a | b) if a | b else 1.0


def _shingles(text: str) -> set[bytes]:
    data = text.encode("utf-8").ljust(SHINGLE, b"\0")
    return {data[i : i + SHINGLE] for i in range(len(data) - SHINGLE + 1)}
