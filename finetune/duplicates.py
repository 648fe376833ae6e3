"""Exact and near-duplicate detection for chat examples.

Exact: the same words in the same turns, ignoring case and spacing. Near: MinHash
estimates of the Jaccard similarity of character 5-grams, computed separately
for what was asked and what was answered; two examples are near-duplicates when
*both* sides reach the threshold. So "What is photosynthesis?" answered with
"mainly" or "mostly" is one example, while the same answer to a differently
worded question (a paraphrase worth learning) stays.

Candidates come from locality-sensitive hashing on the answer signature (16
bands of 4), so the work grows with the number of examples, not its square.
Both the signatures and the index are datasketch's (``MinHash``, ``MinHashLSH``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from finetune.rows import ShareGptTurn

if TYPE_CHECKING:
    from datasketch import MinHash

NUM_PERM = 64
BANDS = 16
SHINGLE = 5


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def sides(conversations: Sequence[ShareGptTurn]) -> tuple[str, str]:
    """(everything asked, everything answered), normalized; system prompts are left out."""
    asked = [normalize(t["value"]) for t in conversations if t["from"] == "human"]
    answered = [normalize(t["value"]) for t in conversations if t["from"] == "gpt"]
    return "\n".join(asked), "\n".join(answered)


def exact_key(conversations: Sequence[ShareGptTurn]) -> str:
    asked, answered = sides(conversations)
    return hashlib.sha256(f"{asked}\0{answered}".encode()).hexdigest()


class NearDuplicates:
    """Keeps a set of accepted examples and tells whether a new one nearly repeats one of them."""

    def __init__(self, threshold: float, seed: int = 0) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.seed = seed
        # Explicit bands: the index only proposes candidates, `add` checks both sides itself.
        self._index = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, NUM_PERM // BANDS))
        self._kept: list[tuple[MinHash, MinHash]] = []

    def signature(self, text: str) -> MinHash:
        """The MinHash of a text's character 5-grams (a shorter text is one shingle)."""
        from datasketch import MinHash

        signature = MinHash(num_perm=NUM_PERM, seed=self.seed)
        count = max(len(text) - SHINGLE + 1, 1)
        signature.update_batch({text[i : i + SHINGLE].encode() for i in range(count)})
        return signature

    def add(self, conversations: Sequence[ShareGptTurn]) -> bool:
        """Accept the example unless it nearly repeats an accepted one; return whether it was accepted."""
        asked, answered = sides(conversations)
        question, answer = self.signature(asked), self.signature(answered)
        for index in self._index.query(answer):
            kept_question, kept_answer = self._kept[index]
            if self.similar(answer, kept_answer) and self.similar(question, kept_question):
                return False
        self._index.insert(len(self._kept), answer)
        self._kept.append((question, answer))
        return True

    def similar(self, one: MinHash, other: MinHash) -> bool:
        return bool(one.jaccard(other) >= self.threshold)
