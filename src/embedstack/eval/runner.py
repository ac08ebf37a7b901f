"""Run an encoder over a BEIR dataset or STS pairs and report what users compare models on.

Retrieval is exact over the full corpus (as BEIR/MTEB rank it), at the requested Matryoshka
dimension and storage precision; query latency is measured per query, one at a time,
encoding included, as a search request would pay it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from embedstack import vectors
from embedstack._typing import Precision
from embedstack.encoders.base import TextEncoder
from embedstack.eval.datasets import BeirDataset, StsData, iter_corpus
from embedstack.eval.metrics import evaluate, latency_summary, spearman
from embedstack.vectorset import VectorSet

__all__ = ["dense_retrieval", "encoder_config", "evaluate_dense", "evaluate_sts"]

HEADLINE = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def encoder_config(encoder: TextEncoder) -> dict[str, Any]:
    """The encoder settings that determine its vectors, for reports."""
    return {
        "model": encoder.name,
        "model_id": encoder.model_id,
        "backend": getattr(encoder, "backend_name", None),
        "quantize": getattr(encoder, "quantize", None),
        "max_length": getattr(encoder, "max_length", None),
        "full_dim": encoder.dim,
    }


def _embed_corpus(
    encoder: TextEncoder, dataset: BeirDataset, show_progress: bool | None
) -> tuple[list[str], np.ndarray]:
    ids: list[str] = []
    texts: list[str] = []
    for doc in iter_corpus(dataset):
        ids.append(doc.id)
        texts.append(doc.full_text or doc.id)
    if show_progress is not None and hasattr(encoder, "show_progress"):
        encoder.show_progress = show_progress
    return ids, encoder.encode_documents(texts)


def dense_retrieval(
    encoder: TextEncoder,
    dataset: BeirDataset,
    *,
    dim: int | None = None,
    precision: Precision = "float32",
    rescore: bool = True,
    depth: int = 1000,
    rescore_multiplier: int = 4,
    doc_embeddings: tuple[list[str], np.ndarray] | None = None,
    show_progress: bool | None = None,
) -> tuple[dict[str, dict[str, float]], list[float], VectorSet]:
    """Rank the full corpus for every query of the dataset's split.

    Args:
        encoder: Any :class:`~embedstack.encoders.base.TextEncoder`.
        dataset: A loaded BEIR dataset.
        dim: Matryoshka truncation of queries and documents (re-normalized).
        precision: Document storage precision (queries stay float32).
        rescore: For ``binary``: rescore Hamming candidates with int8 codes.
        depth: Documents ranked per query.
        rescore_multiplier: For ``binary`` with ``rescore``: Hamming candidates per ranked
            document (``depth * rescore_multiplier`` candidates are rescored). When that
            reaches the corpus size, rescoring is exhaustive and equals ``int8``.
        doc_embeddings: Precomputed ``(ids, (n, full_dim) float32)`` to reuse across
            settings (the corpus is encoded once).
        show_progress: Progress bar for the corpus encoding.

    Returns:
        ``(run, latencies_seconds, vector_set)``: the run as ``{qid: {doc_id: score}}``.
    """
    ids, embeddings = doc_embeddings or _embed_corpus(encoder, dataset, show_progress)
    if dim is not None and dim != embeddings.shape[1]:
        embeddings = vectors.truncate(embeddings, dim)
    store = VectorSet.from_float(embeddings, precision, rescore=rescore)
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    for qid, text in dataset.queries.items():
        start = time.perf_counter()
        query = encoder.encode_queries([text])
        if dim is not None and dim != query.shape[1]:
            query = vectors.truncate(query, dim)
        scores, index = store.search(query, depth, rescore_multiplier=rescore_multiplier)
        latencies.append(time.perf_counter() - start)
        run[qid] = {ids[int(i)]: float(s) for s, i in zip(scores[0], index[0], strict=True)}
    return run, latencies, store


def evaluate_dense(
    encoder: TextEncoder,
    dataset: BeirDataset,
    *,
    dim: int | None = None,
    precision: Precision = "float32",
    rescore: bool = True,
    depth: int = 1000,
    rescore_multiplier: int = 4,
    doc_embeddings: tuple[list[str], np.ndarray] | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Evaluate exact dense retrieval; returns the JSON report of ``embedstack eval``.

    The report holds every metric of :func:`~embedstack.eval.metrics.evaluate` (``ndcg@10``,
    ``recall@100``, ``mrr@10``, ``map@100`` …), ``n_queries``, ``latency_ms_p50/p99/mean``,
    ``index_bytes`` and the exact ``config``.
    """
    run, latencies, store = dense_retrieval(
        encoder,
        dataset,
        dim=dim,
        precision=precision,
        rescore=rescore,
        depth=depth,
        rescore_multiplier=rescore_multiplier,
        doc_embeddings=doc_embeddings,
        show_progress=show_progress,
    )
    metrics = evaluate(dataset.qrels, run)
    return {
        **metrics,
        "n_queries": len(run),
        **latency_summary(latencies),
        "index_bytes": store.nbytes,
        "config": {
            "dataset": dataset.name,
            "split": dataset.split,
            "retriever": "dense",
            "mode": "dense",
            "dim": dim or encoder.dim,
            "precision": precision,
            "n_docs": len(store),  # embedstack report: bytes per document
            "rescore": bool(rescore and precision == "binary"),
            "depth": depth,
            # candidates actually rescored: equal to the corpus size means exhaustive int8
            "rescore_candidates": (
                min(depth * rescore_multiplier, len(store))
                if precision == "binary" and store.rescore_codes is not None
                else None
            ),
            **encoder_config(encoder),
        },
    }


def evaluate_sts(encoder: TextEncoder, data: StsData, *, dim: int | None = None) -> dict[str, Any]:
    """Spearman correlation between cosine similarity and gold scores (as MTEB reports STS)."""
    left = encoder.encode(list(data.sentences1))
    right = encoder.encode(list(data.sentences2))
    if dim is not None and dim != left.shape[1]:
        left, right = vectors.truncate(left, dim), vectors.truncate(right, dim)
    cosine = np.sum(vectors.normalize(left) * vectors.normalize(right), axis=1)
    return {
        "spearman": spearman(cosine, np.asarray(data.scores, dtype=np.float64)),
        "n_pairs": len(cosine),
        "config": {"dim": dim or encoder.dim, **encoder_config(encoder)},
    }
