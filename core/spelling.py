"""Misspelt words put right toward the words a search knows, before the search.

People type "who is the hed gardner at ormsby hal"; the embedding model cuts each misspelt
word into pieces ("observatry" → obs·erva·try) and the message lands far from the stored
question it asks. Search engines answer this with "did you mean", built from their own index
rather than from a dictionary: a word the index does not hold is replaced by the one indexed
word a letter or two away. The same here, with two guards:

* a word the embedding model's vocabulary holds whole is a real word ("cast", "rings") and is
  left as it is, even one letter from an indexed word ("cost", "rinks"): it may ask something
  else;
* only a single closest word replaces it: with two as close, the word stays.

Only words of three to 24 letters are put right: one letter away from a two-letter word is
half of it, and no word people type is longer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable

_WORD = re.compile(r"[^\W\d_]+")
SHORTEST = 3  # letters: shorter words are never put right
LONGEST = 24  # letters: nor longer ones (no word people type; a long one would cost its square in forms)
LONG = 7  # letters: a word this long or longer may be two edits away, a shorter one only one
ENDINGS = frozenset({"s", "es", "d", "ed", "ing", "er", "ers"})


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance with swapped neighbours counting one (``limit + 1`` once it is past ``limit``)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before: list[int] | None = None
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if before is not None and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, before[j - 2] + 1)
            current.append(cost)
        if min(current) > limit:
            return limit + 1
        before, previous = previous, current
    return previous[-1]


def inflected(word: str, other: str) -> bool:
    """Whether one word is the other with an ending ("kayaks", "kayak"): a form, not a misspelling."""
    short, long = sorted((word, other), key=len)
    return long.startswith(short) and long[len(short) :] in ENDINGS


def _deletes(word: str) -> set[str]:
    """``word`` with one letter taken out, each way."""
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class Speller:
    """The words a search knows, indexed so a misspelling finds them fast (symmetric deletes).

    Two words one edit apart share a form with at most one letter taken out of each; for words of
    ``LONG`` letters or more, the message's word may lose two. Candidates are then checked with
    ``edit_distance``. Built once per change of the index: about 10 entries per known word.
    """

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(w for w in known if len(w) >= SHORTEST)
        self._by_form: dict[str, set[str]] = {}
        for word in self.known:
            for form in {word, *_deletes(word)}:
                self._by_form.setdefault(form, set()).add(word)

    def closest(self, word: str) -> str | None:
        """The one known word within reach of ``word`` and closer than any other; None if none or a tie."""
        limit = 2 if len(word) >= LONG else 1
        forms = {word, *_deletes(word)}
        if limit == 2:
            forms |= {shorter for form in _deletes(word) for shorter in _deletes(form)}
        candidates = {c for form in forms for c in self._by_form.get(form, ())}
        found = sorted(
            (distance, candidate)
            for candidate in candidates
            if (distance := edit_distance(word, candidate, limit)) <= limit
        )
        if not found or (len(found) > 1 and found[0][0] == found[1][0]):
            return None
        return found[0][1]

    def respelled(self, text: str, is_word: Callable[[str], bool]) -> str:
        """``text`` with each misspelt word replaced by the known word it most likely meant.

        ``is_word`` says whether a lower-case word is a real one (the embedding model's
        vocabulary holds it whole): those are left as they are.
        """

        def put_right(found: re.Match[str]) -> str:
            word = found[0]
            lower = word.casefold()
            if not SHORTEST <= len(lower) <= LONGEST or lower in self.known or is_word(lower):
                return word
            known = self.closest(lower)
            return known if known and not inflected(lower, known) else word

        return _WORD.sub(put_right, text)

    @classmethod
    def of(cls, texts: Collection[str]) -> Speller:
        """A speller that knows the words (letters only, lower case) of ``texts``."""
        return cls(word.casefold() for text in texts for word in _WORD.findall(text))
