"""Dense bi-encoder: texts → ``(n, dim) float32`` L2-normalized vectors.

Loads any sentence-transformers folder or Hugging Face model (see
:mod:`embedstack.encoders.loading`), tokenizes with ``tokenizers``, batches by length under a
token budget, runs an inference backend (ONNX Runtime by default, torch as the reference) and
pools in numpy. Query and document prefixes come from the model's registry entry or its
``config_sentence_transformers.json`` prompts, never from user code. A folder that ships
only an ONNX graph (``model.onnx``, e.g. the fetched ``paraphrase-MiniLM-L3-v2``) runs that
graph, pooled here only when its output still has a sequence axis. ``Dense`` modules after
pooling (:mod:`embedstack.encoders.st_dense`) run in numpy on the pooled vectors, before
normalization, whichever backend produced them.

Example:
    >>> from embedstack import Encoder
    >>> encoder = Encoder("all-MiniLM-L6-v2")
    >>> encoder.encode_documents(["A cat sits.", "Stocks fell."]).shape
    (2, 384)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from embedstack import vectors
from embedstack._typing import Backend, FloatArray, IntArray, Precision
from embedstack.encoders.base import batched, empty, validate_texts
from embedstack.encoders.loading import load_model_config
from embedstack.encoders.registry import DEFAULT_MODEL, ModelSpec
from embedstack.encoders.runtime import (
    HIDDEN_STATES,
    ONNX_ONLY,
    Identified,
    ModelId,
    RuntimeOptions,
    is_onnx_only,
    load_tokenizer,
    make_runner,
    open_model,
    pad_batch,
)
from embedstack.encoders.runtime.heads import count_truncated, length_batches
from embedstack.encoders.st_dense import DenseHead
from embedstack.encoders.static import is_static_folder
from embedstack.errors import InvalidInput
from embedstack.settings import cache_dir as default_cache_dir
from embedstack.settings import progress_enabled

__all__ = ["Encoder", "pool"]

logger = logging.getLogger("embedstack")

Side = Literal["query", "document", "symmetric"]
PRECISIONS = ("float32", "int8", "binary")
CHUNK = 2048  # texts tokenized and sorted together; bounds memory while streaming


def pool(hidden: FloatArray, mask: np.ndarray, how: str) -> FloatArray:
    """Pool ``(batch, seq, hidden)`` token vectors into ``(batch, hidden)`` float32.

    ``mean`` averages the non-padding tokens, ``cls`` takes the first token, ``last`` the last
    non-padding token (right padding).
    """
    if how == "cls":
        return np.ascontiguousarray(hidden[:, 0], dtype=np.float32)
    lengths = mask.sum(axis=1)
    if how == "last":
        return np.ascontiguousarray(hidden[np.arange(len(hidden)), lengths - 1], dtype=np.float32)
    weights = mask[..., None].astype(np.float32)
    summed = np.einsum("bsh,bsx->bh", hidden, weights)
    return (summed / np.maximum(lengths, 1)[:, None]).astype(np.float32)


class Encoder(Identified):
    """A dense text encoder for any sentence-transformers / Hugging Face model.

    Args:
        model: Registry name (``embedstack models``), Hugging Face id, or local folder.
        backend: ``"onnx"`` (ONNX Runtime over a cached, fused export) or ``"torch"``.
        quantize: ``"int8"`` for dynamically quantized weights (ONNX only), else None.
        max_length: Token limit; defaults to the model's ``max_seq_length``. Longer inputs are
            truncated and counted in :attr:`truncated`.
        batch_tokens: Token budget of one batch (rows × padded length).
        batch_size: Maximum rows in one batch.
        threads: Inference threads; None uses every CPU available to the process.
        cache_dir: Where exported ONNX models are cached (default ``settings.cache_dir()``).
        show_progress: Progress bar; None means "when stderr is a terminal".

    Raises:
        ModelNotFound: the weights cannot be found locally (the message lists where we looked).
        InvalidInput: an option is out of range.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        backend: Backend | str = "onnx",
        quantize: Literal["int8"] | None = None,
        max_length: int | None = None,
        batch_tokens: int = 4096,
        batch_size: int = 64,
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        show_progress: bool | None = None,
    ) -> None:
        if quantize not in (None, "int8"):
            raise InvalidInput(f"quantize must be None or 'int8', got {quantize!r}")
        if batch_tokens < 1 or batch_size < 1:
            raise InvalidInput("batch_tokens and batch_size must be >= 1")
        found = open_model(model)
        config = load_model_config(found.path, found.spec)
        self.spec: ModelSpec | None = found.spec
        self.config = config
        self.backend_name = backend
        self.quantize = quantize
        model_max = config.max_length
        if max_length is not None and not 1 <= max_length <= model_max:
            raise InvalidInput(f"max_length must be in [1, {model_max}], got {max_length}")
        self.max_length = max_length or model_max
        self.batch_tokens = batch_tokens
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.truncated = 0
        self.identity: ModelId = found.identify(config.transformer_path, config.head_files)
        self._head = DenseHead.load(config.dense)
        self._tokenizer = load_tokenizer(config.transformer_path, self.max_length)
        options = RuntimeOptions(
            path=config.transformer_path,
            id=self.identity,
            cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
            quantize=quantize,
            threads=threads,
            trust_remote_code=bool(found.spec and found.spec.trust_remote_code),
        )
        head = ONNX_ONLY if is_onnx_only(config.transformer_path) else HIDDEN_STATES
        if backend in ("onnx", "torch") and is_static_folder(config.transformer_path):
            backend = self.backend_name = "static"  # a lookup table: nothing to export
        self._model = make_runner(backend, head, options)
        self._dim = config.dim or int(self._embed([["x"]])[0].shape[1])

    # -- identity ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Dimension of the full embedding."""
        return self._dim

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        """Dimensions the model was trained to be truncated to (its registry entry's, or
        those a trained folder records); empty when truncation was not trained."""
        return self.config.matryoshka_dims

    @property
    def query_prefix(self) -> str:
        """Prefix prepended to queries by :meth:`encode_queries`."""
        return self.config.query_prefix

    @property
    def document_prefix(self) -> str:
        """Prefix prepended to documents by :meth:`encode_documents`."""
        return self.config.document_prefix

    def __repr__(self) -> str:
        quant = f", quantize={self.quantize!r}" if self.quantize else ""
        return f"Encoder({self.name!r}, backend={self.backend_name!r}{quant}, dim={self.dim})"

    # -- public encoding API ----------------------------------------------------------------
    def encode(
        self,
        texts: Iterable[str],
        *,
        dim: int | None = None,
        precision: Precision = "float32",
        calibration: vectors.Int8Calibration | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Encode texts symmetrically, e.g. for STS or clustering.

        Texts get the model's symmetric prefix (``"query: "`` for e5 models, as their model
        card prescribes; none for most models), not the query or document one.

        Args:
            texts: Non-empty strings.
            dim: Matryoshka truncation (then re-normalization) to this many dimensions.
            precision: ``"float32"`` → ``(n, dim) float32``; ``"int8"`` → ``(n, dim) int8``
                (per-dimension ranges from ``calibration``, or from these vectors when None);
                ``"binary"`` → ``(n, ceil(dim/8)) uint8`` packed sign bits.
            calibration: int8 ranges (see :func:`embedstack.vectors.calibrate_int8`).
            show_progress: Override the encoder's progress setting.

        Returns:
            One row per text, in input order.

        Raises:
            InvalidInput: empty input, a non-str/blank/invalid item, bad precision.
            DimensionMismatch: ``dim`` outside ``[1, self.dim]``.
        """
        return self._encode(texts, "symmetric", dim, precision, calibration, show_progress)

    def encode_queries(
        self,
        texts: Iterable[str],
        *,
        dim: int | None = None,
        precision: Precision = "float32",
        calibration: vectors.Int8Calibration | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Encode search queries with the model's query prefix. See :meth:`encode`."""
        return self._encode(texts, "query", dim, precision, calibration, show_progress)

    def encode_documents(
        self,
        texts: Iterable[str],
        *,
        dim: int | None = None,
        precision: Precision = "float32",
        calibration: vectors.Int8Calibration | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Encode documents with the model's document prefix. See :meth:`encode`."""
        return self._encode(texts, "document", dim, precision, calibration, show_progress)

    def iter_encode(
        self, texts: Iterable[str], *, side: Side = "document", chunk_size: int = CHUNK
    ) -> Iterator[FloatArray]:
        """Stream ``(m, dim) float32`` blocks for any iterable, in input order.

        Memory stays bounded by ``chunk_size`` texts whatever the length of ``texts``.
        """
        start = 0
        for chunk in batched(texts, chunk_size):
            valid = validate_texts(chunk, start=start)
            start += len(valid)
            yield self._embed_chunk(self._prefixed(valid, side))

    def count_tokens(self, texts: Iterable[str]) -> IntArray:
        """Number of tokens of each text after truncation to :attr:`max_length`."""
        encoded = self._tokenizer.encode_batch(validate_texts(texts))
        return np.array([len(e.ids) for e in encoded], dtype=np.int64)

    # -- internals --------------------------------------------------------------------------
    def _prefixed(self, texts: list[str], side: Side) -> list[str]:
        prefix = {
            "query": self.query_prefix,
            "document": self.document_prefix,
            "symmetric": self.config.symmetric_prefix,
        }.get(side, "")
        lower = self.config.do_lower_case
        # A token covers at most ~100 characters, so longer inputs only cost tokenization time.
        limit = max(4096, self.max_length * 100)
        out = []
        for text in texts:
            text = prefix + text
            if lower:
                text = text.lower()
            out.append(text[:limit])
        return out

    def _encode(
        self,
        texts: Iterable[str],
        side: Side,
        dim: int | None,
        precision: str,
        calibration: vectors.Int8Calibration | None,
        show_progress: bool | None,
    ) -> np.ndarray:
        if precision not in PRECISIONS:
            raise InvalidInput(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if dim is not None and not 1 <= dim <= self.dim:
            from embedstack.errors import DimensionMismatch

            raise DimensionMismatch(f"dim must be in [1, {self.dim}] for {self.name}, got {dim}")
        items = validate_texts(texts)
        if not items:
            raise InvalidInput("nothing to encode: pass at least one text")
        out = self._embed([self._prefixed(items, side)], show_progress)
        result = out[0] if len(out) == 1 else np.concatenate(out)
        return self._postprocess(result, dim, precision, calibration)

    def _postprocess(
        self,
        embeddings: FloatArray,
        dim: int | None,
        precision: str,
        calibration: vectors.Int8Calibration | None,
    ) -> np.ndarray:
        if dim is not None and dim != embeddings.shape[1]:
            embeddings = vectors.truncate(embeddings, dim)
        if precision == "int8":
            calibration = calibration or vectors.calibrate_int8(embeddings)
            return vectors.quantize_int8(embeddings, calibration)
        if precision == "binary":
            return vectors.quantize_binary(embeddings)
        return embeddings

    def _embed(
        self, chunks: list[list[str]], show_progress: bool | None = None
    ) -> list[FloatArray]:
        total = sum(len(c) for c in chunks)
        show = (
            progress_enabled(show_progress if show_progress is not None else self.show_progress)
            and total > self.batch_size
        )
        if not show:
            return [self._embed_chunk(c) for part in chunks for c in batched(part, CHUNK)]
        from rich.progress import Progress

        results = []
        with Progress(transient=True) as progress:
            task = progress.add_task(f"encoding with {self.name}", total=total)
            for part in chunks:
                for chunk in batched(part, CHUNK):
                    results.append(self._embed_chunk(chunk))
                    progress.advance(task, len(chunk))
        return results

    def _embed_chunk(self, texts: list[str]) -> FloatArray:
        if not texts:
            return empty(self.dim)
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        self.truncated += count_truncated(encodings, self.max_length)
        lengths = [len(e.ids) for e in encodings]
        result: FloatArray | None = None
        for index in length_batches(lengths, self.batch_size, self.batch_tokens):
            batch = pad_batch(encodings, index)
            out = self._model(batch)  # a shipped graph may pool itself: (batch, dim)
            if out.ndim == 2:
                pooled = self._project_pooled(out)
            else:
                pooled = pool(out, batch["attention_mask"], self.config.pooling)
                pooled = self._head(pooled) if self._head is not None else pooled
            if result is None:
                result = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            result[index] = pooled
        if result is None:
            return empty(self.dim)
        return vectors.normalize(result) if self.config.normalize else result

    def _project_pooled(self, out: FloatArray) -> FloatArray:
        """The Dense head on a graph's own pooled output, unless the graph ran it already
        (its output is then the head's width, not the pooled one)."""
        head = self._head
        if head is None or out.shape[1] != head.out_features:
            return head(out) if head is not None else out
        if out.shape[1] != head.in_features:
            return out
        raise InvalidInput(f"{self.name}: the ONNX graph pools itself and its "
                           f"{out.shape[1]}-d output fits the Dense head both before and after "
                           "it; export the transformer's token states instead")  # fmt: skip
