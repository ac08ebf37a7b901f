"""Evaluate on a BEIR dataset with work cached across runs: an index, or corpus vectors.

* :func:`evaluate_on_index` — ``bm25``/``hybrid`` (and pipelines): the corpus is ingested
  into an :class:`~embedstack.index.Index` once, and an existing one is reused when it holds
  the same corpus with the same configuration.
* :func:`cached_corpus_embeddings` — exact ``dense`` evaluation
  (:func:`~embedstack.eval.runner.evaluate_dense`): the corpus is encoded once per model and
  its vectors kept as ``.npy``, reused the same way (every dimension and precision is
  derived from the full-dimension float32 vectors).

Both caches live under ``$EMBEDSTACK_CACHE_DIR/eval-*`` unless a folder is given, and both
are keyed by the corpus file (path, size, modification time) and the model's identity.
Every query is searched one at a time so the latency percentiles are what a user pays per
request.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.eval.datasets import BeirDataset, iter_corpus
from embedstack.eval.metrics import evaluate, latency_summary

__all__ = [
    "build_or_open_index",
    "cached_corpus_embeddings",
    "corpus_documents",
    "evaluate_index",
    "evaluate_on_index",
]


def corpus_documents(dataset: BeirDataset) -> Iterator[dict[str, Any]]:
    """The dataset's corpus as index documents (id, title, text, metadata)."""
    for doc in iter_corpus(dataset):
        text = doc.text if doc.text.strip() else (doc.title or doc.id)
        yield {"id": doc.id, "title": doc.title, "text": text, "metadata": dict(doc.metadata)}


def _config_key(dataset: BeirDataset, options: dict[str, Any]) -> str:
    path = Path(dataset.corpus_path)
    info = path.stat()
    corpus = {"corpus": str(path.resolve()), "size": info.st_size, "mtime": info.st_mtime_ns}
    blob = json.dumps({**corpus, **options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _stamp_matches(stamp: Path, key: str) -> bool:
    try:
        return bool(json.loads(stamp.read_text(encoding="utf-8")).get("key") == key)
    except (OSError, ValueError):
        return False


def cached_corpus_embeddings(
    encoder: Any, dataset: BeirDataset, directory: Path, *, show_progress: bool | None = None
) -> tuple[list[str], np.ndarray]:
    """The corpus's ``(ids, (n_docs, full_dim) float32 document vectors)``, encoded once.

    ``directory`` keeps ``ids.json``, ``embeddings.npy`` and ``eval-source.json`` (the key:
    corpus file and ``encoder.model_id``); a later call with the same key loads them instead
    of encoding. Files are written to temporary names and renamed, the key last.
    """
    from embedstack.eval.runner import _embed_corpus

    stamp = directory / "eval-source.json"
    key = _config_key(dataset, {"model_id": encoder.model_id, "kind": "corpus-embeddings"})
    if _stamp_matches(stamp, key):
        ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        matrix = np.load(directory / "embeddings.npy", allow_pickle=False)
        if isinstance(ids, list) and matrix.ndim == 2 and len(ids) == matrix.shape[0]:
            return [str(i) for i in ids], matrix
    ids, matrix = _embed_corpus(encoder, dataset, show_progress)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    with open(directory / "embeddings.npy.tmp", "wb") as handle:
        np.save(handle, matrix, allow_pickle=False)
    os.replace(directory / "embeddings.npy.tmp", directory / "embeddings.npy")
    (directory / "ids.json.tmp").write_text(json.dumps(ids), encoding="utf-8")
    os.replace(directory / "ids.json.tmp", directory / "ids.json")
    stamp.write_text(json.dumps({"key": key, "corpus": str(dataset.corpus_path)}), "utf-8")
    return ids, matrix


def build_or_open_index(
    dataset: BeirDataset,
    directory: Path,
    *,
    create_options: dict[str, Any],
    batch_size: int = 512,
    show_progress: bool | None = None,
) -> Any:
    """Open ``directory`` if it already indexes this corpus with these options, else build it.

    Returns:
        An open :class:`~embedstack.index.Index`.
    """
    from embedstack.index import Index

    stamp = directory / "eval-source.json"
    key = _config_key(
        dataset, {k: getattr(v, "model_id", repr(v)) for k, v in create_options.items()}
    )
    if _stamp_matches(stamp, key):
        return Index.open(directory)
    if directory.exists() and any(directory.iterdir()):
        import shutil

        shutil.rmtree(directory)
    index = Index.create(directory, **create_options)
    _ingest(index, corpus_documents(dataset), batch_size, show_progress)
    stamp.write_text(json.dumps({"key": key, "corpus": str(dataset.corpus_path)}), "utf-8")
    return index


def _ingest(index: Any, docs: Iterator[dict[str, Any]], batch_size: int, show: bool | None) -> None:
    from embedstack.encoders.base import batched as _batched
    from embedstack.settings import progress_enabled

    batches = _batched(docs, batch_size)
    if not progress_enabled(show):
        for batch in batches:
            index.upsert(batch)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("indexing"),
        BarColumn(),
        TextColumn("{task.completed} docs"),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task("indexing", total=None)
        for batch in batches:
            index.upsert(batch)
            progress.advance(task, len(batch))


def evaluate_index(
    index: Any,
    dataset: BeirDataset,
    *,
    mode: str,
    depth: int = 100,
    search_options: dict[str, Any] | None = None,
    pipeline: Any = None,
) -> dict[str, Any]:
    """Search every query of the split (one at a time) and compute BEIR metrics.

    Args:
        pipeline: a :class:`~embedstack.pipeline.Pipeline` to run instead of ``mode``
            (``depth`` caps its results); the report then adds ``stage_latency``, the
            per-stage latency percentiles of :func:`embedstack.pipeline.stage_latency`.

    Returns:
        The ``embedstack eval`` JSON report: metrics, ``n_queries``, latency percentiles,
        ``index_bytes`` and ``config``.
    """
    options = dict(search_options or {})
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    stage_times: list[dict[str, float]] = []
    for qid, text in dataset.queries.items():
        start = time.perf_counter()
        if pipeline is None:
            hits = index.search(text, mode=mode, k=depth, **options)
        else:
            traced = pipeline.trace(index, text, depth)
            hits = traced.hits
            stage_times.append(traced.timings)
        latencies.append(time.perf_counter() - start)
        run[qid] = {hit.doc_id: float(hit.score) for hit in hits}
    stats = index.stats()
    metrics = evaluate(dataset.qrels, run)
    extra: dict[str, Any] = {}
    if pipeline is not None:
        from embedstack.pipeline import stage_latency

        options.update(
            pipeline=pipeline.name,
            pipeline_string=pipeline.config.to_string(),
            pipeline_config=pipeline.config.to_dict(),
            models=pipeline.models,
        )
        extra["stage_latency"] = stage_latency(stage_times)
    return {
        **metrics,
        **extra,
        "n_queries": len(run),
        **latency_summary(latencies),
        "index_bytes": int(stats.bytes_total),
        "config": {
            "dataset": dataset.name,
            "split": dataset.split,
            "retriever": mode,
            "mode": mode,
            "depth": depth,
            **{k: v for k, v in options.items() if v is not None},
            "index": stats.as_dict() if hasattr(stats, "as_dict") else str(stats),
        },
    }


def evaluate_on_index(
    dataset: BeirDataset,
    encoder: Any,
    *,
    mode: str,
    directory: Path,
    dim: int | None = None,
    precision: str = "float32",
    search_options: dict[str, Any] | None = None,
    pipeline: Any = None,
    colbert: Any = None,
) -> dict[str, Any]:
    """Build (or reuse) the evaluation index in ``directory`` and evaluate ``mode`` on it.

    Args:
        encoder: the dense encoder the index stores vectors of.
        mode: ``"bm25"``, ``"dense"`` or ``"hybrid"`` (ignored with ``pipeline``).
        directory: the index folder (rebuilt when it holds another corpus or configuration).
        search_options: extra ``Index.search`` options (``fusion``, ``alpha``).
        pipeline: a built :class:`~embedstack.pipeline.Pipeline` to run instead of ``mode``.
        colbert: a :class:`~embedstack.encoders.colbert.LateInteractionEncoder` whose token
            vectors the index also stores (for ``colbert`` stages).

    Returns:
        The report of :func:`evaluate_index`, its ``config`` completed with the model, its
        identity, the precision, the index folder and the ColBERT model.
    """
    options: dict[str, Any] = {"encoder": encoder, "dim": dim, "precision": precision}
    if colbert is not None:
        options["colbert"] = colbert
    index = build_or_open_index(dataset, directory, create_options=options)
    try:
        if pipeline is not None:
            report = evaluate_index(index, dataset, mode="pipeline", pipeline=pipeline)
        else:
            report = evaluate_index(index, dataset, mode=mode, search_options=search_options)
    finally:
        index.close()
    report["config"].update(model=encoder.name, model_id=encoder.model_id, precision=precision)
    report["config"]["index_dir"] = str(directory)
    if colbert is not None:
        report["config"]["colbert"] = colbert.model_id
    return report
