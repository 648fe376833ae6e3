"""The correction memory's embedder: the torch-free GGUF matches the reference model, and converts safely.

The reference is all-MiniLM-L6-v2 run by transformers + torch from the same package's files,
pooled as sentence-transformers does (mean over the attention mask, then L2 normalisation).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core import embedding
from core.embedding import Embedder, bert_tensor_name, default_embedder, minilm_gguf, minilm_zip

# Varied on purpose: short, empty, long (> 512 tokens), accents, other scripts, emoji,
# control characters, BERT's own marker words typed as text.
SENTENCES = [
    "Who designed the Iris logo?",
    "",
    "ok",
    "What's the Wi-Fi password at the Tidewell library",
    " ".join(["The committee met again on Thursday to argue about the harbour budget."] * 60),
    "Ünïcödé àccents: café, naïve, façade, Ångström",
    "東京の天気はどうですか",
    "Привет! Как у тебя дела сегодня?",
    "مرحبا، كيف حالك اليوم؟",
    "सुप्रभात, आप कैसे हैं?",
    "Ελληνικά γράμματα και αριθμοί 42",
    "🎉🎉 party time 🥳👍",
    "ALL CAPS SHOUTING HERE!!!",
    "tab\tnew\nline   and   spaces",
    "[SEP] [CLS] and [MASK] are BERT's markers",
    "\x00null\x00 bytes",
    "e-mail help@iris-voice.example or call +44 20 7946 0958",
    "i wonder who drew teh iris logo lol",
    "x" * 50,
    "https://example.com/a/very/long/path?with=query&and=more#fragment",
]


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding-models")


@pytest.fixture(scope="session")
def embedder(minilm_dir: Path) -> Iterator[Embedder]:
    e = Embedder(minilm_gguf(minilm_dir))
    yield e
    e.close()


@pytest.fixture(scope="session")
def reference() -> object:
    """all-MiniLM-L6-v2 through transformers: the model the GGUF must reproduce."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tempfile.mkdtemp(prefix="minilm-")
    with zipfile.ZipFile(minilm_zip()) as archive:
        archive.extractall(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()

    def embed(texts: list[str]) -> np.ndarray:
        # split_special_tokens: "[SEP]" typed by a person is text, as llama.cpp tokenizes it here.
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=512, split_special_tokens=True, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        unit: np.ndarray = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return unit

    embed.tokenizer = tokenizer  # type: ignore[attr-defined]
    return embed


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_gguf_matches_the_reference_model(minilm_dir: Path, reference: object, dtype: str) -> None:
    expected = reference(SENTENCES)  # type: ignore[operator]
    e = Embedder(minilm_gguf(minilm_dir, dtype))
    try:
        got = e.embed(SENTENCES)
    finally:
        e.close()
    cosines = (got * expected).sum(axis=1)
    worst = {text[:40]: round(float(c), 4) for text, c in zip(SENTENCES, cosines, strict=True) if c < 0.99}
    assert not worst, worst
    assert len(reference.tokenizer(SENTENCES[4])["input_ids"]) > 512  # type: ignore[attr-defined]


def test_vocabulary_is_the_one_llama_cpp_names_bert_bge(reference: object) -> None:
    """The pre-tokenizer name written is the one llama.cpp's converter derives from this tokenizer."""
    converter = pytest.importorskip("conversion.base")
    chktxt = converter.TextModel.get_vocab_base_pre.__code__.co_consts
    text = next(c for c in chktxt if isinstance(c, str) and "🚀" in c)
    ids = reference.tokenizer.encode(text)  # type: ignore[attr-defined]
    assert hashlib.sha256(str(ids).encode()).hexdigest() == (
        "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f"  # "bert-bge" in the converter
    )


def test_tensor_names_are_llama_cpps() -> None:
    gguf = pytest.importorskip("gguf")
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, 6)
    with zipfile.ZipFile(minilm_zip()) as archive, tempfile.TemporaryDirectory() as folder:
        archive.extract("model.safetensors", folder)
        with safe_open(os.path.join(folder, "model.safetensors"), "np") as tensors:
            keys = list(tensors.keys())
    mapped = {k: bert_tensor_name(k) for k in keys}
    assert sum(v is not None for v in mapped.values()) == 5 + 6 * 16
    for key, ours in mapped.items():
        if ours is not None:
            assert ours == names.get_name(key, try_suffixes=(".weight", ".bias")), key


def test_rows_are_unit_float32_in_order(embedder: Embedder) -> None:
    vectors = embedder.embed(["Who designed the logo?", "What colour is the sky?"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert embedder.dim == 384 and "MiniLM" in embedder.name and "f16" in embedder.name
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    single = embedder.embed(["What colour is the sky?"])
    assert float(single[0] @ vectors[1]) > 0.9999  # alone or in a batch: the same (f16 rounding aside)
    assert embedder.embed([]).shape == (0, 384)


def test_any_text_embeds(embedder: Embedder) -> None:
    odd = [
        "",
        "\ud800 lone surrogate",
        "x" * 3000,  # one "word" over BERT's 100 characters: the reference says [UNK], llama.cpp splits it
        "word " * 20000,  # far past the window
        "東" * 5000,
        "\u202eright-to-left override\u202c",
        "e\u0301\u0301\u0301 combining",
        "\x00\x01\x02\x7f",
        "[CLS]" * 600,
    ]
    vectors = embedder.embed(odd)
    assert vectors.shape == (len(odd), 384)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_tokens_are_the_reference_tokenizers(embedder: Embedder, reference: object) -> None:
    """[CLS] text [SEP], WordPiece as BERT uncased splits it (lower case, accents stripped)."""
    llama = embedder._model()
    # Not the long one (cut differently, see Embedder._fit) nor the Hindi one: llama.cpp drops the
    # vowel sign "ा" (a spacing mark) where BERT keeps it; its embedding still matches (above).
    for text in [t for t in SENTENCES if t not in (SENTENCES[4], "सुप्रभात, आप कैसे हैं?")]:
        expected = reference.tokenizer(text, split_special_tokens=True)["input_ids"]  # type: ignore[attr-defined]
        assert llama.tokenize(text.encode(), add_bos=True, special=False) == expected, text


def test_long_text_is_cut_to_its_first_512_tokens(embedder: Embedder) -> None:
    head = "The harbour committee met on Thursday to argue about the budget for the new pier. " * 40
    a = embedder.embed([head + "Cats are wonderful pets. " * 200])
    b = embedder.embed([head + "Quantum chromodynamics describes quarks. " * 200])
    assert float(a[0] @ b[0]) > 0.999  # the tails lie past the window


# Hand-made (anchor, paraphrase, unrelated) triples; none of them was used to tune anything.
TRIPLES = [
    (
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "What's the weather in Paris?",
    ),
    (
        "Where is the nearest train station?",
        "how far is the closest railway station",
        "Who painted the Mona Lisa?",
    ),
    ("Can you recommend a good book?", "Suggest a novel I might enjoy", "How many legs does a spider have?"),
    ("What time does the shop close?", "when does the store shut today", "Tell me a joke about penguins"),
    ("Who is the mayor of Duncliff?", "duncliff mayor name?", "How do I boil an egg?"),
    ("Is the museum open on Mondays?", "Can I visit the museum on a Monday?", "What is the speed of light?"),
]


@pytest.mark.parametrize(("anchor", "paraphrase", "unrelated"), TRIPLES)
def test_paraphrases_score_above_unrelated(
    embedder: Embedder, anchor: str, paraphrase: str, unrelated: str
) -> None:
    a, p, u = embedder.embed([anchor, paraphrase, unrelated])
    assert float(a @ p) > float(a @ u) + 0.2


def test_conversion_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = minilm_gguf(tmp_path)
    stamp = first.stat().st_mtime_ns, first.stat().st_ino

    def refuse(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(embedding, "convert_minilm", refuse)
    again = minilm_gguf(tmp_path)
    assert again == first and (again.stat().st_mtime_ns, again.stat().st_ino) == stamp


def test_default_embedder_caches_under_models(tmp_path: Path) -> None:
    e = default_embedder(tmp_path)
    assert e.gguf.parent == tmp_path / "models"
    assert not e.gguf.exists()  # a bot whose memory stays empty never converts it
    assert e.embed(["hello"]).shape == (1, 384) and e.gguf.is_file()
    assert default_embedder(tmp_path).gguf == e.gguf


def test_a_killed_conversion_leaves_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = embedding.convert_minilm

    def dies_halfway(source: Path, out: Path, dtype: str = "f16") -> None:
        out.write_bytes(b"GGUF half of a header")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedding, "convert_minilm", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        minilm_gguf(tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(embedding, "convert_minilm", real)
    assert Embedder(minilm_gguf(tmp_path)).embed(["hello"]).shape == (1, 384)


def test_stale_partial_from_a_killed_process_is_cleared(tmp_path: Path) -> None:
    stale = tmp_path / ".all-minilm-l6-v2-f16.gguf.dead0001.partial"
    stale.write_bytes(b"GGUF truncated")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    live = tmp_path / ".all-minilm-l6-v2-f16.gguf.live0001.partial"  # another process converting now
    live.write_bytes(b"GGUF")
    path = minilm_gguf(tmp_path)
    assert not stale.exists() and live.exists()
    assert Embedder(path).embed(["hello"]).shape == (1, 384)


def test_two_conversions_at_once_leave_one_good_file(tmp_path: Path) -> None:
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(minilm_gguf(tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]
    assert Embedder(paths[0]).embed(["hello"]).shape == (1, 384)


def test_concurrent_calls_give_the_serial_answers(embedder: Embedder) -> None:
    texts = [f"question number {i} about the Iris logo" for i in range(8)]
    serial = embedder.embed(texts)
    out: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        out[i] = embedder.embed([texts[i]])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.stack([out[i] for i in range(len(texts))]), serial, atol=1e-4)
