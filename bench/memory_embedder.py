"""The correction memory with MiniLM fine-tuned on the fact sets (#25; not a test).

    .venv/bin/python bench/memory_embedder.py [--train NAME …] [--test NAME …] [--epochs 2]

Fine-tunes all-MiniLM-L6-v2 (the installed package's zip, on torch: the ``train-cpu`` extra) so
that a fact's question and its unseen wordings come close while its near misses and rule-made
contrast questions (``finetune.lanes.contrasts``) stay apart. Each training row is a question and
one of its wordings (both ways round) with one of its near misses or contrasts; in-batch
contrastive loss (InfoNCE, temperature 0.05), AdamW at 2e-5, batches of 32, one thread.
``--rule-made`` trains on each fact's question alone, as the bot could for any approved
correction: its rule-made wordings (``finetune.teaching.every_wording``) and contrasts.

The result is written as a GGUF by the bot's own converter (``core.embedding.convert_minilm``)
and run by llama.cpp, so the figures are the path a shipped model would take; then
``core.memory.CorrectionMemory`` as it ships (thresholds and margins unchanged) is fed the
``--test`` sets, beside the bundled GGUF, as ``bench/memory_models.py`` does. Also the time to
embed one short message with each.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

# bench/ is the script's folder, so its sibling is importable when run as a script.
from memory_models import FIXTURES, ROOT, counts, latency_ms

from core.embedding import Embedder, convert_minilm, default_embedder, minilm_zip
from finetune.lanes import contrasts
from finetune.teaching import every_wording

OLDER = ["tuning", "heldout", "fresh", "blind", *(f"blind{n}" for n in range(2, 7))]
NEWER = [f"blind{n}" for n in range(7, 11)]


def rows(names: list[str], rule_made: bool = False) -> list[tuple[str, str, str]]:
    """(anchor, the same question reworded, another question about its subject).

    ``rule_made``: from each fact's question alone, as the bot could for any approved correction:
    its rule-made wordings (``finetune.teaching.every_wording``) and contrasts, no person's words.
    """
    out = []
    for name in names:
        for fact in json.loads((FIXTURES / f"{name}.json").read_text())["facts"]:
            made = contrasts(fact["question"])
            others = made if rule_made else [*fact["near_miss"], *made[:4]]
            wordings = every_wording(fact["question"])[1:] if rule_made else fact["unseen"]
            if not others:  # no contrast rule fits the question
                continue
            for i, wording in enumerate(wordings):
                out.append((fact["question"], wording, others[i % len(others)]))
                out.append((wording, fact["question"], others[(i + 1) % len(others)]))
    return out


def fine_tuned(names: list[str], epochs: int, folder: Path, rule_made: bool = False) -> Path:
    """The package's zip, fine-tuned on ``names``' facts, as a zip of the same shape in ``folder``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    source = folder / "source"
    with zipfile.ZipFile(minilm_zip()) as archive:
        archive.extractall(source)
    tokenizer: Any = AutoTokenizer.from_pretrained(source)
    model: Any = AutoModel.from_pretrained(source)

    def encode(texts: list[str]) -> Any:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (model(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=1)

    data = rows(names, rule_made)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        random.shuffle(data)
        total = 0.0
        for first in range(0, len(data), 32):
            batch = data[first : first + 32]
            anchors = encode([a for a, _, _ in batch])
            others = encode([p for _, p, _ in batch] + [n for _, _, n in batch])
            loss = torch.nn.functional.cross_entropy(anchors @ others.T / 0.05, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.item())
        print(f"epoch {epoch + 1}: loss {total:.2f}, {time.perf_counter() - start:.0f} s", flush=True)
    tuned = folder / "tuned"
    model.save_pretrained(tuned)
    out = folder / "tuned.zip"
    with zipfile.ZipFile(out, "w") as archive:
        for name in ("config.json", "model.safetensors"):  # the weights changed, the rest did not
            archive.write(tuned / name, name)
        for name in ("tokenizer.json", "1_Pooling/config.json"):
            archive.write(source / name, name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", default=OLDER)
    parser.add_argument("--test", nargs="+", default=NEWER)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rule-made", action="store_true", help="rule-made wordings and contrasts only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        gguf = folder / "all-minilm-l6-v2-tuned-f16.gguf"
        convert_minilm(fine_tuned(args.train, args.epochs, folder, args.rule_made), gguf, "f16")
        embedders = {"bundled": default_embedder(ROOT / "data"), "fine-tuned": Embedder(gguf)}
        print("| embedder | fact set | unseen wordings answered | near misses matched | unrelated matched |")
        print("| --- | --- | --- | --- | --- |")
        for label, embedder in embedders.items():
            total = {"unseen_answered": 0, "unseen": 0, "near_matched": 0, "near": 0, "unrelated_matched": 0}
            for name in args.test:
                found = counts(embedder, json.loads((FIXTURES / f"{name}.json").read_text()))
                for key in total:
                    total[key] += found[key]
                print(
                    f"| {label} | {name} | {found['unseen_answered']} of {found['unseen']} | "
                    f"{found['near_matched']} of {found['near']} | {found['unrelated_matched']} |",
                    flush=True,
                )
            print(
                f"| {label} | all | {total['unseen_answered']} of {total['unseen']} | "
                f"{total['near_matched']} of {total['near']} | {total['unrelated_matched']} |"
            )
        for label, embedder in embedders.items():
            ms = latency_ms(embedder)
            print(f"{label}: one short message in {ms['p50']:.1f} ms p50, {ms['p95']:.1f} ms p95")


if __name__ == "__main__":
    main()
