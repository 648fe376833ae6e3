"""The correction memory: an approved correction answers the very next question that asks it.

A retrain makes a correction the model's own, but it takes minutes of CPU and
only lands when the gate passes; until then the model keeps giving the answer a
person already marked wrong. So every approved correction is indexed by its
question's wordings (the person's, and the rule-made ones ``finetune.teaching``
trains on) with a small embedding model (``core.embedding``), stored beside the
corrections. A new message close enough to one of them is answered from it:

* at or above ``serve`` (the same question, reworded): the approved answer is
  the reply, as the reviewer approved it;
* at or above ``match``: the model writes the reply with the approved answer
  given to it as a reviewed fact (``grounding``).

Each correction also stores, as questions it does not answer, other questions about its
subject made by rules (``contrasts``: "Who coaches the Herons?" beside "Who is the Herons'
captain?"), all but those within ``CONTRAST_KEPT_BELOW`` of one of its wordings. A served reply
marked 👎 teaches the memory the same way: its question is stored as one the correction does not
answer (``dispute``). A message closer to such a question than to the correction's own wordings
(by ``NEGATIVE_MARGIN``) is left to the model. A question that is the correction's own
(``SAME``) cannot be disputed: that 👎 disputes the answer, which is what ✏️ and review are for.

A match must also sit about as close to the approved answer as the person's question does
(``ANSWER_MARGIN``): "How many boats does the club own?" is far from "The club has 212
members", its rewording "How many people are in the club?" is not. Misspelt words are put right
toward the indexed wordings' words before anything is compared (``core.spelling``).

A match must also ask what the correction asks (``core.question_kind``, English only): not
another kind of answer ("When was it published?" against "Who wrote it?") and no number,
weekday or month the correction's wordings lack, nor the opposite of one of their words ("close"
against "open"). A message that asks for the same kind of answer counts ``SAME_KIND_BONUS``
closer, so rewordings the embedding puts just under ``match`` still find their correction.

What the serving model already knows by itself (its gate found it recalled the
fact alone: ``known``) is not served from memory; the correction stays stored.
Removing a correction (rejected, edited, /forget) removes its wordings in the
same step, and every process sees the change at its next lookup: the index is
read again whenever the stored entries change (``MemoryStore.memory_stamp``).
Thresholds and the choice between serving and grounding: docs/feedback.md.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.domain import Correction, CorrectionStatus
from core.question_kind import Asked, asks_something_else, kinds
from core.spelling import Speller

log = logging.getLogger(__name__)


class Embed(Protocol):
    """Sentences to unit vectors (``core.embedding.Embedder``)."""

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def is_word(self, word: str) -> bool:
        """Whether the model's vocabulary holds ``word`` whole (``core.spelling``)."""
        ...


@dataclass(frozen=True)
class MemoryEntry:
    """One indexed wording of an approved correction, as stored."""

    correction_id: int
    question: str  # what the person asked when the correction was made
    wording: str
    answer: str
    vector: bytes  # float32, unit length
    negative: bool = False  # a question it was served for and marked 👎: not what it answers
    is_answer: bool = False  # the approved answer itself (``wording`` is the answer), for ``ANSWER_MARGIN``


class MemoryStore(Protocol):
    """Where the memory's entries live (``storage.memory.SqlMemoryStore``)."""

    def memory_stamp(self, model: str) -> tuple[int, int]:
        """Changes whenever ``model``'s entries change (added or removed): (highest id, count)."""
        ...

    def memory_entries(self, model: str) -> list[MemoryEntry]: ...

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
        """Drop the correction's entries and store ``rows`` and ``negatives`` (wording, vector) and the
        answer's vector at once."""
        ...

    def drop_memory(self, correction_id: int) -> int:
        """Remove the correction's entries; how many there were."""
        ...

    def add_negative(self, correction_id: int, model: str, wording: str, vector: bytes) -> None:
        """Store ``wording`` as a question the correction does not answer (kept until it is indexed anew)."""
        ...

    def unindexed_corrections(self, model: str) -> list[Correction]:
        """Approved corrections that have no entries for ``model``."""
        ...


class MemoryMode(enum.StrEnum):
    SERVED = "served"  # the approved answer is the reply
    GROUNDED = "grounded"  # the model wrote the reply with the approved answer as a reviewed fact


@dataclass(frozen=True)
class MemoryConfig:
    """``IRIS_MEMORY_*``: thresholds are cosine similarities between the message and a wording."""

    enabled: bool = True
    match: float = 0.80
    serve: float = 0.80  # = match: no grounding (the bundled 135M model uses a given fact badly)
    max_wordings: int = 12  # rule-made wordings indexed per correction, the person's question first


@dataclass(frozen=True)
class Recall:
    """A message close enough to an approved correction."""

    correction_id: int
    wording: str  # the indexed wording it was closest to
    answer: str
    score: float
    mode: MemoryMode


# A 👎 on a question this close to one of the correction's own wordings disputes the answer, not the match.
SAME = 0.95
# A message that asks for the same known kind of answer as the correction (who/who, when/what
# year…) counts this much closer: chosen on tests/fixtures/memory/tuning.json (docs/feedback.md).
SAME_KIND_BONUS = 0.10
# A rule-made contrast this close to one of the correction's own wordings is the same question
# ("What is the address of X?" beside "What is X's address?"): it is not kept.
CONTRAST_KEPT_BELOW = 0.97
# A message is left to the model when a question the correction does not answer (a contrast, or
# one marked 👎) is closer to it than the correction's wording by this much: the embedding puts
# rewordings ("Who created Snapwick?") close to contrasts too ("Who designed Snapwick?").
# Chosen on tests/fixtures/memory/tuning.json (docs/feedback.md).
NEGATIVE_MARGIN = 0.05
# A match must be about as close to the approved answer as the person's question is: a rewording
# asks for that answer ("How many people are in the club?" beside "…the club has 212 members"),
# a near miss asks for another ("How many boats does the club own?") and sits farther from it.
# Left to the model when it is farther by more than this. Chosen on tuning.json and blind.json
# (docs/feedback.md).
ANSWER_MARGIN = 0.10


def normalized(question: str) -> str:
    """Questions compared for equality: lower case, words only."""
    return " ".join(re.findall(r"\w+", question.lower()))


def grounding(recall: Recall, system_prompt: str) -> str:
    """The system prompt with the approved answer given as a reviewed fact."""
    fact = (
        f'A reviewer checked this answer to the question "{recall.wording}": {recall.answer}\n'
        "When the message asks this, answer with it."
    )
    return f"{system_prompt}\n\n{fact}" if system_prompt else fact


class CorrectionMemory:
    """The approved corrections, indexed by question wordings; thread-safe, shared by every reply."""

    def __init__(
        self,
        store: MemoryStore,
        embedder: Embed,
        config: MemoryConfig | None = None,
        wordings: Callable[[str], Sequence[str]] = lambda question: [question],
        known: Callable[[str], set[str]] = lambda model: set(),
        contrasts: Callable[[str], Sequence[str]] = lambda question: [],
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or MemoryConfig()
        self._wordings = wordings  # the question's wordings to index, the question itself first
        self._known = known  # model version -> normalized questions it recalls by itself (its gate)
        self.contrasts = contrasts  # other questions about the question's subject (finetune.lanes)
        self._lock = threading.Lock()
        self._synced = False
        self._stamp: tuple[int, int] | None = None
        self._entries: list[MemoryEntry] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._asked: dict[int, Asked] = {}  # per correction: what its wordings ask
        # Per correction: its answer's vector, and how close the person's question is to it.
        self._answers: dict[int, _Answer] = {}
        self._speller = Speller(())  # knows every wording's words: misspelt words are put right to them
        # Whether a match must also ask what the correction asks (off: the embedding alone, as
        # before issue 25's check), stay near its answer (off: inf), and whether misspelt words are
        # put right first: bench/memory.py measures with and without.
        self.check_question = True
        self.answer_margin = ANSWER_MARGIN
        self.respell = True

    # --- what is in it ---------------------------------------------------------------

    def learn(self, correction: Correction) -> int:
        """Index an approved correction (again, with its current text) or drop any other.

        The number of wordings indexed; minus the number of entries dropped when it leaves.
        """
        if correction.status is not CorrectionStatus.APPROVED or not (correction.prompt or "").strip():
            return -self.store.drop_memory(correction.id)
        return self._write(correction.id, (correction.prompt or "").strip(), correction.text)

    def _write(self, correction_id: int, question: str, answer: str) -> int:
        """Store ``question``'s wordings and contrasts for the correction (only while it is approved)."""
        wordings = list(dict.fromkeys([question, *self._wordings(question)]))[: 1 + self.config.max_wordings]
        own_questions = set(map(normalized, wordings))
        others = [q for q in self.contrasts(question) if normalized(q) not in own_questions]
        vectors = self.embedder.embed([*wordings, *others, answer]).astype(np.float32)
        own, contrast = vectors[: len(wordings)], vectors[len(wordings) : -1]
        rows = [(w, v.tobytes()) for w, v in zip(wordings, own, strict=True)]
        negatives = [
            (q, v.tobytes())
            for q, v in zip(others, contrast, strict=True)
            if float(np.max(own @ v)) < CONTRAST_KEPT_BELOW
        ]
        self.store.replace_memory(
            correction_id, self.embedder.name, question, answer, rows, negatives, vectors[-1].tobytes()
        )
        return len(rows)

    def dispute(self, correction_id: int, question: str) -> bool:
        """A reply served from ``correction_id`` for ``question`` was marked 👎: stop serving it for that."""
        entries, matrix, _ = self._index()
        own = [
            i
            for i, e in enumerate(entries)
            if e.correction_id == correction_id and not (e.negative or e.is_answer)
        ]
        if not own or not question.strip():
            return False
        vector = self.embedder.embed([question])[0]
        if float(np.max(matrix[own] @ vector)) >= SAME:
            return False
        self.store.add_negative(
            correction_id, self.embedder.name, question, vector.astype(np.float32).tobytes()
        )
        return True

    def sync(self) -> int:
        """Index approved corrections that have no entries for this embedder (made before, or elsewhere),
        and again those indexed without contrast questions or their answer (before these existed); how many.

        Once per process, at start (``App.warm_up``) or at the first lookup; what is approved
        later is indexed by the review itself.
        """
        missing = self.store.unindexed_corrections(self.embedder.name)
        for correction in missing:
            self.learn(correction)
        stale = self._indexed_before(self.store.memory_entries(self.embedder.name))
        for correction_id, (question, answer) in stale.items():
            self._write(correction_id, question, answer)
        self._synced = True
        return len(missing) + len(stale)

    def _indexed_before(self, entries: Sequence[MemoryEntry]) -> dict[int, tuple[str, str]]:
        """The corrections (question, answer) stored without their answer's row, or whose stored
        questions include none of their contrasts."""
        indexed: dict[int, tuple[str, str]] = {}
        negatives: dict[int, set[str]] = {}
        answered: set[int] = set()
        for entry in entries:
            indexed[entry.correction_id] = (entry.question, entry.answer)
            if entry.negative:
                negatives.setdefault(entry.correction_id, set()).add(entry.wording)
            if entry.is_answer:
                answered.add(entry.correction_id)
        return {
            correction_id: stored
            for correction_id, stored in indexed.items()
            if correction_id not in answered
            or ((made := set(self.contrasts(stored[0]))) and not made & negatives.get(correction_id, set()))
        }

    # --- looking up ------------------------------------------------------------------

    def recall(self, text: str, model: str) -> Recall | None:
        """The approved correction ``text`` asks, unless ``model`` knows it alone; None when none is close."""
        if not self.config.enabled or not text.strip():
            return None
        entries, matrix, asked_by = self._index()
        if not entries:
            return None
        if self.respell:
            text = self._speller.respelled(text, self.embedder.is_word)
        query = self.embedder.embed([text])[0]
        scores = matrix @ query
        disputed: dict[int, float] = {}  # per correction: the closest question it was marked 👎 for
        for entry, score in zip(entries, scores, strict=True):
            if entry.negative:
                disputed[entry.correction_id] = max(disputed.get(entry.correction_id, -1.0), float(score))
        known = self._known(model)
        bonus = SAME_KIND_BONUS if self.check_question else 0.0
        asked = kinds(text) if self.check_question else frozenset()
        best: tuple[float, int] | None = None  # (closeness, entry index)
        for index in np.argsort(-scores):
            score = float(scores[index])
            if score + bonus < self.config.match:
                break
            entry = entries[index]
            if entry.negative or entry.is_answer or normalized(entry.question) in known:
                continue
            if disputed.get(entry.correction_id, -1.0) >= score + NEGATIVE_MARGIN:
                continue
            if (answer := self._answers.get(entry.correction_id)) and float(
                answer.vector @ query
            ) < answer.question_closeness - self.answer_margin:
                log.debug("memory: %r is farther from correction %d's answer", text, entry.correction_id)
                continue
            closeness = score
            if self.check_question:
                stored = asked_by[entry.correction_id]
                if reason := asks_something_else(text, stored):
                    log.debug(
                        "memory: %r is not correction %d's question: %s", text, entry.correction_id, reason
                    )
                    continue
                closeness += bonus if asked & stored.kinds else 0.0
            if closeness >= self.config.match and (best is None or closeness > best[0]):
                best = (closeness, int(index))
        if best is None:
            return None
        closeness, index = best
        entry = entries[index]
        mode = MemoryMode.SERVED if closeness >= self.config.serve else MemoryMode.GROUNDED
        return Recall(entry.correction_id, entry.wording, entry.answer, float(scores[index]), mode)

    def _index(self) -> tuple[list[MemoryEntry], np.ndarray, dict[int, Asked]]:
        """The entries, their vectors and what each correction asks; read again when the store changed."""
        if not self._synced:
            with self._lock:
                if not self._synced:
                    self.sync()
        stamp = self.store.memory_stamp(self.embedder.name)
        with self._lock:
            if stamp != self._stamp:
                entries = self.store.memory_entries(self.embedder.name)
                vectors = [np.frombuffer(e.vector, dtype=np.float32) for e in entries]
                self._matrix = np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
                wordings: dict[int, list[str]] = {}
                for e in entries:
                    if not e.negative and not e.is_answer:
                        wordings.setdefault(e.correction_id, []).append(e.wording)
                self._answers = _answers(entries, self._matrix)
                self._asked = {c: Asked.of(w) for c, w in wordings.items()}
                self._speller = Speller.of([w for ws in wordings.values() for w in ws])
                self._entries, self._stamp = entries, stamp
            return self._entries, self._matrix, self._asked


@dataclass(frozen=True)
class _Answer:
    vector: np.ndarray
    question_closeness: float  # cosine of the person's question and the answer


def _answers(entries: Sequence[MemoryEntry], matrix: np.ndarray) -> dict[int, _Answer]:
    """Per correction with an answer row: its vector, and how close the person's question is to it."""
    questions = {
        e.correction_id: i
        for i, e in enumerate(entries)
        if e.wording == e.question and not (e.negative or e.is_answer)
    }
    return {
        e.correction_id: _Answer(matrix[i], float(matrix[i] @ matrix[questions[e.correction_id]]))
        for i, e in enumerate(entries)
        if e.is_answer and e.correction_id in questions
    }
