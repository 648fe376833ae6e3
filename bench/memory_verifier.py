"""Can a check learned from the fact sets beat the correction memory's rules? (#25; not a test)

    .venv/bin/python bench/memory_verifier.py [--train NAME …] [--test NAME …] [--answer-likelihood]

On every fact set the memory's search ranks the right correction first for a rewording: what
misses, and what lets a near miss through, is the yes or no on that first correction. This fits
that yes or no as a logistic regression, on the ``--train`` sets' unseen wordings (yes) and near
misses (no), from what the memory can see of a message and its first correction:

- the memory's own signals: the cosine to the correction's closest wording, to the person's
  question and to its closest contrast question; the answer check's difference (the message's
  cosine to the approved answer minus the question's); the same kind of answer, another kind
  (``core.question_kind``); the margin over the next correction;
- word overlap: the share of the message's content words found in the correction's wordings, and
  of the question's content words found in the message;
- token alignment: MiniLM's vector for each token (no pooling); for each content token of the
  message, its closest token among the correction's wordings (and, for the last figure, its
  answer); the lowest and the mean, and the same from the question's side (as BERTScore does).

It is scored twice: leaving each ``--train`` set out in turn, and on the ``--test`` sets with a
fit on every ``--train`` set. Printed beside the shipped rules' counts on the same messages, at
thresholds 0.3 to 0.9 on the fitted probability. A message is only a candidate where the rules'
first floor lets it be (closeness + ``SAME_KIND_BONUS`` ≥ 0.70), so unrelated messages stay out.

``--without-alignment`` fits on the memory's signals and word overlap alone: what a lookup already
has, at no cost beyond the one sentence embedding it makes.

``--answer-likelihood`` also asks SmolLM2 (the bundled chat model, q8_0): how likely the
approved answer is after the message, against after the person's question; the AUC of that
difference between rewordings and near misses.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import numpy as np

# bench/ is the script's folder, so its sibling is importable when run as a script.
from memory_models import FIXTURES, ROOT, taught

from core.embedding import Embedder, default_embedder
from core.memory import SAME_KIND_BONUS
from core.question_kind import asks_something_else, kinds

FLOOR = 0.70
CHEAP = 9  # the first features: the memory's signals and word overlap; the rest are token alignment
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Words that say how a question is asked, not what about: left out of overlap and alignment.
_FUNCTION = """a an the of to in on at for is are was were be do does did what who whom whose when where which
    why how can could would will should please tell me i you it its this that there their they we our
    my your and or with by from about as if any need know want name s"""
FUNCTION_WORDS = frozenset(_FUNCTION.split())


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in FUNCTION_WORDS]


def stem(word: str) -> str:
    return word[:5]


class Tokens:
    """MiniLM's unit vector for each content token of a text (llama.cpp, no pooling)."""

    def __init__(self, embedder: Embedder) -> None:
        import llama_cpp

        from core.gguf import open_gguf

        embedder.embed(["convert the GGUF if needed"])
        self.llama = open_gguf(
            embedder.gguf,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE,
            n_ctx=512,
            n_batch=512,
            n_ubatch=512,
        )
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self.cache:
            ids = self.llama.tokenize(text.encode(), add_bos=True, special=False)
            vectors = np.asarray(self.llama.embed(text), dtype=np.float32)
            pieces = [self.llama.detokenize([t]).decode("utf-8", "replace").strip().lower() for t in ids]
            keep = [
                i
                for i, piece in enumerate(pieces)
                if re.search(r"[a-z0-9]", piece) and piece not in FUNCTION_WORDS | {"[cls]", "[sep]"}
            ] or [0]
            chosen = vectors[keep]
            self.cache[text] = chosen / np.linalg.norm(chosen, axis=1, keepdims=True)
        return self.cache[text]


def rows(embedder: Embedder, tokens: Tokens, name: str) -> list[dict[str, Any]]:
    """Per message of the set: its kind, whether the rules took it, and the features of its first correction.

    Reads the memory's index as ``CorrectionMemory.recall`` does (its private parts: this is a bench).
    """
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    facts = data["facts"]
    memory = taught(embedder, facts)
    entries, matrix, asked_by = memory._index()
    vocabulary: dict[int, set[str]] = {}
    wordings: dict[int, list[str]] = {}
    for e in entries:
        if not (e.negative or e.is_answer):
            vocabulary.setdefault(e.correction_id, set()).update(map(stem, content_words(e.wording)))
            wordings.setdefault(e.correction_id, []).append(e.wording)
    messages = [(q, n, "unseen") for n, f in enumerate(facts, 1) for q in f["unseen"]]
    messages += [(q, n, "near") for n, f in enumerate(facts, 1) for q in f["near_miss"]]
    messages += [(q, 0, "unrelated") for q in data["unrelated"]]
    out = []
    for message, fact, kind in messages:
        recall = memory.recall(message, "bench")
        text = memory._speller.respelled(message, embedder.is_word)
        query = embedder.embed([text])[0]
        scores = matrix @ query
        own: dict[int, float] = {}
        negative: dict[int, float] = {}
        question: dict[int, float] = {}
        for e, s in zip(entries, scores, strict=True):
            if e.negative:
                negative[e.correction_id] = max(negative.get(e.correction_id, -1.0), float(s))
            elif not e.is_answer:
                own[e.correction_id] = max(own.get(e.correction_id, -1.0), float(s))
                if e.wording == e.question:
                    question[e.correction_id] = float(s)
        first, *rest = sorted(own, key=lambda c: -own[c])
        answer = memory._answers[first]
        words = content_words(text)
        asked = facts[first - 1]["question"]
        mine = tokens(text)
        theirs = np.vstack([tokens(w) for w in wordings[first]])
        with_answer = np.vstack([theirs, tokens(facts[first - 1]["answer"])])
        closest = (mine @ theirs.T).max(1)
        back = (tokens(asked) @ mine.T).max(1)
        out.append(
            {
                "set": name,
                "kind": kind,
                "right": kind == "unseen" and first == fact,
                "rules": recall is not None and (kind != "unseen" or recall.correction_id == fact),
                "candidate": own[first] + SAME_KIND_BONUS >= FLOOR,
                "message": message,
                "answer_text": facts[first - 1]["answer"],
                "question_text": asked,
                "features": [
                    own[first],
                    question.get(first, own[first]),
                    negative.get(first, -1.0),
                    float(answer.vector @ query) - answer.question_closeness,
                    float(bool(kinds(text) & asked_by[first].kinds)),
                    float(asks_something_else(text, asked_by[first]) is not None),
                    own[first] - max((own[c] for c in rest), default=0.0),
                    sum(stem(w) in vocabulary[first] for w in words) / max(1, len(words)),
                    sum(any(stem(w) == stem(x) for x in words) for w in content_words(asked))
                    / max(1, len(content_words(asked))),
                    float(closest.min()),
                    float(closest.mean()),
                    float((mine @ with_answer.T).max(1).min()),
                    float(back.min()),
                    float(back.mean()),
                ],
            }
        )
    return out


def fit(x: np.ndarray, y: np.ndarray, l2: float = 10.0) -> Any:
    """Logistic regression by Newton's method on standardised features; returns the probability function."""
    mean, scale = x.mean(0), x.std(0) + 1e-6

    def design(v: np.ndarray) -> np.ndarray:
        return np.hstack([(v - mean) / scale, np.ones((len(v), 1))])

    z = design(x)
    w = np.zeros(z.shape[1])
    penalty = l2 * np.diag([*np.ones(len(w) - 1), 0.0])
    for _ in range(30):
        p = 1 / (1 + np.exp(-z @ w))
        w -= np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z + penalty, z.T @ (p - y) + penalty @ w)
    return lambda v: 1 / (1 + np.exp(-design(v) @ w))


def trained(rows: list[dict[str, Any]]) -> Any:
    used = [r for r in rows if r["candidate"] and r["kind"] != "unrelated"]
    return fit(np.array([r["features"] for r in used]), np.array([float(r["right"]) for r in used]))


def report(label: str, rows: list[dict[str, Any]], probability: np.ndarray) -> None:
    def count(kind: str, taken: list[bool]) -> str:
        picked = [t for t, r in zip(taken, rows, strict=True) if r["kind"] == kind]
        return f"{sum(picked)} of {len(picked)} ({100 * sum(picked) / max(1, len(picked)):.1f} %)"

    def line(check: str, taken: list[bool]) -> None:
        counts = " | ".join(count(kind, taken) for kind in ("unseen", "near", "unrelated"))
        print(f"| {label} | {check} | {counts} |")

    line("the shipped rules", [r["rules"] for r in rows])
    for t in THRESHOLDS:
        taken = [bool(p >= t and r["candidate"]) for p, r in zip(probability, rows, strict=True)]
        line(f"learned, p ≥ {t}", taken)


def answer_likelihood(rows: list[dict[str, Any]]) -> float:
    """AUC, rewordings against near misses, of log P(answer | message) - log P(answer | question)."""
    from core.gguf import bundled_model, open_gguf

    model = bundled_model(ROOT / "data" / "models", "q8_0")
    llama = open_gguf(model.gguf_path, n_ctx=512, n_batch=512, logits_all=True)

    def mean_logprob(question: str, answer: str) -> float:
        prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        before = llama.tokenize(prompt.encode(), add_bos=False, special=True)
        after = llama.tokenize(answer.encode(), add_bos=False, special=False)
        llama.reset()  # type: ignore[no-untyped-call]
        llama.eval(before + after)
        logits = np.asarray(llama.scores[: len(before) + len(after)], dtype=np.float64)
        top = logits.max(1, keepdims=True)
        logprobs = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
        return float(np.mean([logprobs[len(before) + i - 1, t] for i, t in enumerate(after)]))

    def difference(r: dict[str, Any]) -> float:
        return mean_logprob(r["message"], r["answer_text"]) - mean_logprob(r["question_text"], r["answer_text"])

    right = np.array([difference(r) for r in rows if r["kind"] == "unseen" and r["right"]])
    near = np.array([difference(r) for r in rows if r["kind"] == "near"])
    return float((right[:, None] > near[None, :]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--train",
        nargs="+",
        default=["tuning", "heldout", "fresh", "blind", *(f"blind{n}" for n in range(2, 7))],
    )
    parser.add_argument("--test", nargs="*", default=[f"blind{n}" for n in range(7, 11)])
    parser.add_argument("--answer-likelihood", action="store_true")
    parser.add_argument("--without-alignment", action="store_true")
    args = parser.parse_args()
    embedder = default_embedder(ROOT / "data")
    tokens = Tokens(embedder)
    by_set = {name: rows(embedder, tokens, name) for name in [*args.train, *args.test]}
    if args.without_alignment:
        for r in (r for found in by_set.values() for r in found):
            r["features"] = r["features"][:CHEAP]
    print("| scored on | check | unseen wordings answered | near misses matched | unrelated matched |")
    print("| --- | --- | --- | --- | --- |")
    left_out: list[dict[str, Any]] = []
    probability: list[float] = []
    for name in args.train:
        model = trained([r for other in args.train if other != name for r in by_set[other]])
        left_out += by_set[name]
        probability += list(model(np.array([r["features"] for r in by_set[name]])))
    report("each --train set left out", left_out, np.array(probability))
    if args.test:
        model = trained([r for name in args.train for r in by_set[name]])
        tested = [r for name in args.test for r in by_set[name]]
        report(" + ".join(args.test), tested, model(np.array([r["features"] for r in tested])))
    if args.answer_likelihood:
        everything = [r for name in args.train for r in by_set[name]]
        print(f"answer likelihood, AUC rewordings vs near misses: {answer_likelihood(everything):.3f}")


if __name__ == "__main__":
    main()
