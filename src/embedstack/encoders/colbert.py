"""Late interaction (ColBERT): token-level vectors scored by MaxSim.

:class:`LateInteractionEncoder` follows ColBERT (Khattab & Zaharia 2020) and ColBERTv2
(Santhanam et al. 2022) over any BERT-family folder:

* queries: ``[CLS] [Q] tokens [SEP]`` padded with ``[MASK]`` to ``query_maxlen`` (query
  augmentation: the masks attend to nothing but their outputs are kept, a learned soft
  expansion of the query); the markers are the vocabulary's ``[unused0]`` / ``[unused1]``;
* documents: ``[CLS] [D] tokens [SEP]`` up to ``doc_maxlen``, punctuation tokens dropped;
* an optional linear head (ColBERTv2 checkpoints store ``linear.weight`` in
  ``model.safetensors``; a ``colbert_linear.safetensors``, as
  :func:`embedstack.train.train_colbert` writes, or PyLate's ``1_Dense/`` also works), then
  every token vector is L2-normalised;
* ``query_maxlen``/``doc_maxlen`` default to the folder's ColBERT ``artifact.metadata``.

The token ids come from :class:`~embedstack.encoders.colbert_format.ColbertTokenizer`, the
code path training uses too.

Without a head (e.g. all-MiniLM-L6-v2) the encoder is a zero-shot MaxSim over the model's
own contextual token vectors. :class:`ColbertReranker` rescores a first stage's candidates
(the :class:`embedstack.rerank.Reranker` protocol); :class:`ColbertIndex` is an exact MaxSim
index over a small corpus, saved as ``.npy`` files.

Example:
    >>> from embedstack.encoders.colbert import ColbertReranker
    >>> rr = ColbertReranker("all-MiniLM-L6-v2")               # doctest: +SKIP
    >>> rr.score("do cats purr?", ["Cats purr.", "Stocks fell."])  # doctest: +SKIP
    array([26.1, 17.3], dtype=float32)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.base import validate_texts
from embedstack.encoders.colbert_format import (
    HEAD_FILE,
    METADATA_FILE,
    ColbertInputs,
    ColbertTokenizer,
    check_maxlen,
    read_linear_head,
    read_metadata,
)
from embedstack.encoders.loading import load_model_config
from embedstack.encoders.multivector import (
    TOKEN_PRECISIONS,
    TokenPrecision,
    TokenVectors,
    maxsim,
    save_manifest,
)
from embedstack.encoders.runtime import HIDDEN_STATES, RuntimeOptions, make_runner, open_model
from embedstack.encoders.runtime.identity import Identified
from embedstack.errors import (
    DimensionMismatch,
    IndexCorrupt,
    InvalidInput,
    ModelMismatch,
)
from embedstack.settings import cache_dir as default_cache_dir

__all__ = ["ColbertIndex", "ColbertReranker", "LateInteractionEncoder", "read_linear_head"]


class LateInteractionEncoder(Identified):
    """ColBERT-style token encoder; see the module docstring for the input formats.

    Args:
        name_or_path: registry name, Hugging Face id or folder of a BERT-family model.
        backend: ``"torch"`` (reference) or ``"onnx"`` (the cached export of
            :func:`~embedstack.encoders.onnx_export.ensure_onnx`).
        dim: expected output dimension (the head's, else the hidden size); a model that
            produces another one raises :class:`DimensionMismatch`. None accepts any.
        query_maxlen: query tokens, markers included (queries are padded to it with
            ``[MASK]`` when ``query_augmentation``). None: the ``query_maxlen`` of the
            folder's ColBERT ``artifact.metadata`` (the length it was trained with), else 32.
        doc_maxlen: document tokens before punctuation masking. None: the metadata's
            ``doc_maxlen``, else 180.
        query_augmentation: pad queries with ``[MASK]`` tokens; None (default) does so
            when the folder has a trained ColBERT head. Augmentation is learned: on zero-shot
            MiniLM token vectors it lowers SciFact nDCG@10 of a top-50 rerank from 0.698 to
            0.665 (``benchmarks/colbert_rerank.py``).
        markers: insert the ``[Q]``/``[D]`` markers (``[unused0]``/``[unused1]``).
        mask_punctuation: drop punctuation tokens from documents.
        batch_size: texts per forward pass.
        threads: inference threads; None uses every CPU available.
        cache_dir: ONNX export cache root.

    Raises:
        ModelNotFound: no weights, no ``tokenizer.json``, or an unreadable
            ``artifact.metadata``.
        InvalidInput: an option out of range, or a vocabulary without the marker tokens.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] = "all-MiniLM-L6-v2",
        *,
        backend: Literal["torch", "onnx"] | str = "torch",
        dim: int | None = None,
        query_maxlen: int | None = None,
        doc_maxlen: int | None = None,
        query_augmentation: bool | None = None,
        markers: bool = True,
        mask_punctuation: bool = True,
        batch_size: int = 32,
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        found = open_model(name_or_path)
        path = found.path
        config = load_model_config(path, found.spec, body_only=True)  # ColBERT reads its head
        limit = int(
            json.loads((config.transformer_path / "config.json").read_text("utf-8")).get(
                "max_position_embeddings", 512
            )
        )
        folder = config.transformer_path
        meta_dir = next((d for d in (folder, path) if (d / METADATA_FILE).is_file()), folder)
        meta = read_metadata(meta_dir)
        lengths: dict[str, int] = {}
        for label, value, default in (
            ("query_maxlen", query_maxlen, 32),
            ("doc_maxlen", doc_maxlen, 180),
        ):
            if value is None and label in meta:
                where = f"{meta_dir / METADATA_FILE}: {label}"
                lengths[label] = check_maxlen(where, meta[label], limit)
            else:
                lengths[label] = check_maxlen(label, default if value is None else value, limit)
        query_maxlen, doc_maxlen = lengths["query_maxlen"], lengths["doc_maxlen"]
        if batch_size < 1:
            raise InvalidInput("batch_size must be >= 1")
        self.identity = found.identify(config.transformer_path, extra=(HEAD_FILE,))  # + head
        self.query_maxlen, self.doc_maxlen = query_maxlen, doc_maxlen
        self.markers = markers
        self.mask_punctuation, self.batch_size = mask_punctuation, batch_size
        hidden = int(config.dim or 0)
        head = read_linear_head(folder, hidden)
        if head is None and path != folder:
            head = read_linear_head(path, hidden)
        self.head = head
        augment = head is not None if query_augmentation is None else bool(query_augmentation)
        self.query_augmentation = augment
        self._inputs = ColbertTokenizer(
            folder,
            query_maxlen=query_maxlen,
            doc_maxlen=doc_maxlen,
            query_augmentation=augment,
            markers=markers,
            mask_punctuation=mask_punctuation,
        )
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        options = RuntimeOptions(folder, self.identity, cache, threads=threads)
        self._model = make_runner(backend, HIDDEN_STATES, options)
        self.backend_name = backend
        self.dim = int(self.head.shape[0]) if self.head is not None else hidden
        if dim is not None and dim != self.dim:
            raise DimensionMismatch(f"{self.name} produces {self.dim}-d token vectors, not {dim}")

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer``."""
        return self._inputs.tokenizer

    @property
    def inputs(self) -> ColbertTokenizer:
        """The :class:`~embedstack.encoders.colbert_format.ColbertTokenizer` building the
        token ids (shared with :func:`embedstack.train.train_colbert`)."""
        return self._inputs

    def __repr__(self) -> str:
        return f"LateInteractionEncoder({self.name!r}, backend={self.backend_name!r})"

    # --- encoding --------------------------------------------------------------------------

    def encode_queries(self, texts: Sequence[str]) -> TokenVectors:
        """``query_maxlen`` L2-normalised token vectors per query (fewer without
        augmentation), float32.

        Raises:
            InvalidInput: empty input or a non-str/blank item.
        """
        return self._run(self._inputs.queries(self._check(texts)))

    def encode_documents(self, texts: Sequence[str]) -> TokenVectors:
        """L2-normalised token vectors of each document (punctuation dropped), float32.

        Raises:
            InvalidInput: empty input or a non-str/blank item.
        """
        return self._run(self._inputs.documents(self._check(texts)))

    @staticmethod
    def _check(texts: Sequence[str]) -> list[str]:
        items = validate_texts(texts)
        if not items:
            raise InvalidInput("nothing to encode: pass at least one text")
        return items

    def _run(self, inputs: ColbertInputs) -> TokenVectors:
        lengths = np.array([len(x) for x in inputs.ids])
        order = np.argsort(-lengths, kind="stable")
        out: list[np.ndarray | None] = [None] * len(inputs)
        for b0 in range(0, len(inputs), self.batch_size):
            rows = order[b0 : b0 + self.batch_size]
            batch, keep = inputs.pad(rows.tolist())
            hidden = self._model(batch)
            if self.head is not None:
                hidden = hidden @ self.head.T
            for r, i in enumerate(rows):
                vecs = hidden[r][keep[r]]
                norms = np.linalg.norm(vecs, axis=1, keepdims=True)
                out[i] = (vecs / np.maximum(norms, 1e-12)).astype(np.float32)
        return TokenVectors.from_arrays([o for o in out if o is not None])

    def score(self, query: str, documents: TokenVectors) -> FloatArray:
        """MaxSim of one query against encoded documents: ``(n_docs,)`` float32."""
        return maxsim(self.encode_queries([query]).doc(0), documents)


class ColbertReranker:
    """Rescores candidates by MaxSim (the :class:`embedstack.rerank.Reranker` protocol).

    Documents are encoded on every call (no index needed); for a fixed corpus, encode it
    once into a :class:`ColbertIndex` and use :meth:`ColbertIndex.score` instead.

    Args:
        encoder: a :class:`LateInteractionEncoder`, or a model name / folder to build one
            with ``options``.

    Example:
        >>> ColbertReranker("all-MiniLM-L6-v2").name   # doctest: +SKIP
        'colbert:all-MiniLM-L6-v2'
    """

    def __init__(
        self,
        encoder: LateInteractionEncoder | str | os.PathLike[str] = "all-MiniLM-L6-v2",
        **options: Any,
    ) -> None:
        if not isinstance(encoder, LateInteractionEncoder):
            encoder = LateInteractionEncoder(encoder, **options)
        elif options:
            raise InvalidInput("options apply only when the encoder is given by name")
        self.encoder = encoder
        self.name = f"colbert:{encoder.name}"

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """``(len(documents),)`` float32 MaxSim scores, in input order.

        Raises:
            InvalidInput: a blank query, no documents, or a bad document.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-blank str")
        docs = self.encoder._check(documents)
        return self.encoder.score(query, self.encoder.encode_documents(docs))

    def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[tuple[int, float]]:
        """``[(position, score)]`` best first (ties by position), at most ``top_n``."""
        s = self.score(query, documents)
        order = np.lexsort((np.arange(len(s)), -s))[:top_n]
        return [(int(i), float(s[i])) for i in order]


class ColbertIndex:
    """Exact MaxSim search over a small corpus (every document is scored).

    Build with :meth:`build`, persist with :meth:`save` (``manifest.json``, ``ids.npy``,
    ``vectors.npy``, ``offsets.npy``[, ``scales.npy``]) and reopen with :meth:`load`.

    Example:
        >>> idx = ColbertIndex.build(enc, ["Cats purr.", "Stocks fell."])   # doctest: +SKIP
        >>> idx.search("kittens", k=1)
        [('0', 24.9)]
    """

    def __init__(
        self, encoder: LateInteractionEncoder, ids: list[str], vectors: TokenVectors
    ) -> None:
        if len(ids) != len(vectors) or len(set(ids)) != len(ids):
            raise InvalidInput("ids must be unique, one per document")
        if vectors.dim != encoder.dim:
            raise DimensionMismatch(f"vectors are {vectors.dim}-d, the encoder {encoder.dim}-d")
        self.encoder, self.ids, self.vectors = encoder, ids, vectors
        self._pos = {doc_id: i for i, doc_id in enumerate(ids)}

    @classmethod
    def build(
        cls,
        encoder: LateInteractionEncoder,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        precision: TokenPrecision = "float16",
    ) -> ColbertIndex:
        """Encode ``texts`` (ids default to ``"0"``, ``"1"``, ...) and store them at
        ``precision`` (float16 halves the memory for a MaxSim change below 1e-3)."""
        if precision not in TOKEN_PRECISIONS:
            raise InvalidInput(f"unknown precision {precision!r}; choose one of {TOKEN_PRECISIONS}")
        items = encoder._check(texts)
        doc_ids = [str(i) for i in range(len(items))] if ids is None else list(ids)
        parts = [encoder.encode_documents(items[i : i + 256]) for i in range(0, len(items), 256)]
        return cls(encoder, doc_ids, TokenVectors.concat(parts).astype(precision))

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best ``(id, MaxSim)`` pairs, best first, ties by position."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput(f"k must be a positive int, got {k!r}")
        s = self.encoder.score(query, self.vectors)
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        return [(self.ids[i], float(s[i])) for i in order]

    def score(self, query: str, ids: Sequence[str]) -> np.ndarray:
        """MaxSim of stored documents (rerank candidates without re-encoding them).

        Raises:
            InvalidInput: an id not in the index.
        """
        missing = [i for i in ids if i not in self._pos]
        if missing:
            raise InvalidInput(f"ids not in the ColBERT index: {missing[:5]}")
        return self.encoder.score(query, self.vectors.take([self._pos[i] for i in ids]))

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the index as ``.npy`` files plus ``manifest.json`` (no pickle)."""
        root = Path(folder)
        self.vectors.save(root)
        np.save(root / "ids.npy", np.asarray(self.ids, dtype=str), allow_pickle=False)
        enc = self.encoder
        save_manifest(
            root,
            {
                "format": "embedstack-colbert",
                "format_version": 1,
                "model_id": enc.model_id,
                "name": enc.name,
                "dim": enc.dim,
                "precision": self.vectors.precision,
                "n_docs": len(self),
                "query_maxlen": enc.query_maxlen,
                "doc_maxlen": enc.doc_maxlen,
            },
        )

    @classmethod
    def load(cls, folder: str | os.PathLike[str], encoder: LateInteractionEncoder) -> ColbertIndex:
        """Reopen a saved index (memory-mapped) with the encoder that built it.

        Raises:
            IndexCorrupt: unreadable files.
            ModelMismatch: the encoder's model_id differs from the recorded one.
        """
        root = Path(folder)
        try:
            meta = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
            ids = [str(x) for x in np.load(root / "ids.npy", allow_pickle=False).tolist()]
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"cannot read the ColBERT index in {root}: {exc}") from exc
        if meta.get("model_id") != encoder.model_id:
            raise ModelMismatch(
                f"{root} was built with {meta.get('model_id')}, not {encoder.model_id}"
            )
        return cls(encoder, ids, TokenVectors.load(root))
