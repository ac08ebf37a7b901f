"""Token-level (multi-vector) representations and ColBERT's MaxSim, in numpy.

:class:`TokenVectors` holds the L2-normalised token vectors of many texts concatenated in
one ``(n_tokens, dim)`` array with per-text offsets, stored as float32, float16 or int8
(symmetric per-token scale: ``x ≈ code * scale``). :func:`maxsim` is the late-interaction
score of Khattab & Zaharia (2020, "ColBERT"): for each query token the best-matching
document token, summed, ``S(q, d) = Σ_i max_j q_i · d_j``.

Example:
    >>> q = np.eye(2, dtype=np.float32)
    >>> docs = TokenVectors.from_arrays([np.eye(2, dtype=np.float32), q[:1]])
    >>> maxsim(q, docs).tolist()
    [2.0, 1.0]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from embedstack._typing import FloatArray
from embedstack.errors import DimensionMismatch, IndexCorrupt, InvalidInput

__all__ = ["TOKEN_PRECISIONS", "TokenPrecision", "TokenVectors", "maxsim", "maxsim_many"]

TokenPrecision = Literal["float32", "float16", "int8"]
TOKEN_PRECISIONS: tuple[str, ...] = ("float32", "float16", "int8")
_BLOCK = 1 << 16  # document tokens scored per matrix product (bounds memory)
_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}


@dataclass(frozen=True)
class TokenVectors:
    """Token vectors of ``n`` texts.

    Attributes:
        vectors: ``(n_tokens, dim)`` float32 | float16 | int8 codes.
        offsets: ``(n + 1,)`` int64; text ``i`` owns rows ``offsets[i]:offsets[i+1]``.
        scales: ``(n_tokens,)`` float32 per-token scales for int8, else None.

    Raises:
        InvalidInput: inconsistent arrays.
    """

    vectors: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray | None = None

    def __post_init__(self) -> None:
        v, o = self.vectors, self.offsets
        if v.ndim != 2 or o.ndim != 1 or len(o) < 1 or int(o[0]) != 0 or int(o[-1]) != len(v):
            raise InvalidInput("TokenVectors: offsets must run from 0 to n_tokens")
        if bool(np.any(np.diff(o) < 0)):
            raise InvalidInput("TokenVectors: offsets must not decrease")
        if v.dtype.name not in _DTYPES:
            raise InvalidInput(f"TokenVectors: dtype {v.dtype} is not one of {TOKEN_PRECISIONS}")
        if (v.dtype == np.int8) != (self.scales is not None):
            raise InvalidInput("TokenVectors: int8 vectors need scales, other dtypes none")
        if self.scales is not None and self.scales.shape != (len(v),):
            raise InvalidInput("TokenVectors: one scale per token")

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> TokenVectors:
        """Concatenate ``(n_i, dim)`` float32 arrays (one per text)."""
        if not arrays:
            raise InvalidInput("from_arrays needs at least one array")
        dims = {a.shape[1] for a in arrays}
        if len(dims) != 1:
            raise DimensionMismatch(f"token vectors of different dimensions: {sorted(dims)}")
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        return cls(np.concatenate(arrays).astype(np.float32), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        """Dimension of a token vector."""
        return int(self.vectors.shape[1])

    @property
    def precision(self) -> str:
        """``"float32"``, ``"float16"`` or ``"int8"``."""
        return str(self.vectors.dtype.name)

    @property
    def lengths(self) -> np.ndarray:
        """``(n,)`` int64 tokens per text."""
        return np.diff(self.offsets)

    def floats(self, start: int = 0, stop: int | None = None) -> FloatArray:
        """Token rows ``start:stop`` as float32 (decoded for int8 and float16)."""
        rows = np.asarray(self.vectors[start:stop])
        out = rows.astype(np.float32)
        if self.scales is not None:
            out *= np.asarray(self.scales[start:stop], dtype=np.float32)[:, None]
        return out

    def doc(self, i: int) -> FloatArray:
        """``(n_i, dim)`` float32 token vectors of text ``i``."""
        return self.floats(int(self.offsets[i]), int(self.offsets[i + 1]))

    def astype(self, precision: TokenPrecision | str) -> TokenVectors:
        """The same vectors stored at ``precision`` (int8: per-token ``max|x| / 127``)."""
        if precision not in TOKEN_PRECISIONS:
            raise InvalidInput(f"unknown precision {precision!r}; choose one of {TOKEN_PRECISIONS}")
        if precision == self.precision:
            return self
        x = self.floats()
        if precision == "int8":
            scale = np.abs(x).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
            return TokenVectors(codes, self.offsets, scale.astype(np.float32))
        return TokenVectors(x.astype(_DTYPES[precision]), self.offsets)

    def take(self, rows: Sequence[int] | np.ndarray) -> TokenVectors:
        """The selected texts, in the given order."""
        sel = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[sel], self.offsets[sel + 1] - self.offsets[sel]
        idx = (
            np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
            if len(sel)
            else np.zeros(0, np.int64)
        )
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        scales = None if self.scales is None else np.asarray(self.scales)[idx]
        return TokenVectors(np.asarray(self.vectors)[idx], offsets, scales)

    @staticmethod
    def concat(parts: Sequence[TokenVectors]) -> TokenVectors:
        """Texts of ``parts`` one after another (same dimension and precision)."""
        if not parts:
            raise InvalidInput("concat needs at least one TokenVectors")
        if len({(p.dim, p.precision) for p in parts}) != 1:
            raise DimensionMismatch("cannot concatenate TokenVectors of different dim/precision")
        shifts = np.cumsum([0] + [len(p.vectors) for p in parts[:-1]])
        offsets = np.concatenate(
            [[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)]
        )
        scales = None
        if parts[0].scales is not None:
            scales = np.concatenate([p.scales for p in parts if p.scales is not None])
        return TokenVectors(
            np.concatenate([p.vectors for p in parts]), offsets.astype(np.int64), scales
        )

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write ``vectors.npy``, ``offsets.npy`` (and ``scales.npy``) into ``folder``."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        arrays = {"vectors": self.vectors, "offsets": self.offsets}
        if self.scales is not None:
            arrays["scales"] = self.scales
        for name, arr in arrays.items():
            tmp = root / f".tmp-{name}.npy"
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, root / f"{name}.npy")

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, mmap: bool = True) -> TokenVectors:
        """Read what :meth:`save` wrote (memory-mapped by default).

        Raises:
            IndexCorrupt: missing or inconsistent files.
        """
        root = Path(folder)
        mode: Literal["r"] | None = "r" if mmap else None
        try:
            vectors = np.load(root / "vectors.npy", mmap_mode=mode, allow_pickle=False)
            offsets = np.load(root / "offsets.npy", allow_pickle=False)
            file = root / "scales.npy"
            scales = np.load(file, mmap_mode=mode, allow_pickle=False) if file.exists() else None
            return cls(vectors, offsets, scales)
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"cannot read token vectors in {root}: {exc}") from exc


def maxsim(query: np.ndarray, documents: TokenVectors) -> FloatArray:
    """ColBERT MaxSim of one query against every document: ``(n_docs,)`` float32.

    Args:
        query: ``(n_query_tokens, dim)`` float32 token vectors.
        documents: the documents' token vectors (any precision); a document without tokens
            scores 0.

    Raises:
        DimensionMismatch: the dimensions differ.
    """
    q = np.asarray(query, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != documents.dim:
        raise DimensionMismatch(f"query tokens {q.shape} vs document dim {documents.dim}")
    out = np.zeros(len(documents), dtype=np.float32)
    offsets = documents.offsets
    lengths = np.diff(offsets)
    doc = 0
    while doc < len(documents):  # blocks of whole documents, about _BLOCK tokens each
        end = int(np.searchsorted(offsets, offsets[doc] + _BLOCK, side="right")) - 1
        end = max(end, doc + 1)
        start_tok, stop_tok = int(offsets[doc]), int(offsets[end])
        sims = q @ documents.floats(start_tok, stop_tok).T  # (n_q, tokens in block)
        nonempty = np.flatnonzero(lengths[doc:end] > 0)
        if len(nonempty) and sims.shape[1]:
            starts = offsets[doc:end][nonempty] - start_tok
            best = np.maximum.reduceat(sims, starts, axis=1)  # (n_q, nonempty docs)
            out[doc + nonempty] = best.sum(axis=0, dtype=np.float64)
        doc = end
    return out


def maxsim_many(queries: TokenVectors, documents: TokenVectors) -> FloatArray:
    """MaxSim of every query against every document: ``(n_queries, n_docs)`` float32."""
    return (
        np.stack([maxsim(queries.doc(i), documents) for i in range(len(queries))])
        if len(queries)
        else np.zeros((0, len(documents)), np.float32)
    )


def save_manifest(folder: Path, manifest: dict[str, object]) -> None:
    """Write ``manifest.json`` atomically."""
    tmp = folder / ".tmp-manifest.json"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / "manifest.json")
