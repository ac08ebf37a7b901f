"""Evaluate an :class:`~embedstack.index.Index` (dense, BM25 or hybrid) on a BEIR dataset.

The corpus is ingested into an index once (or an existing one is reused when it holds the
same documents with the same configuration); every query is then searched one at a time so
the latency percentiles are what a user pays per request.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedstack.eval.datasets import BeirDataset, iter_corpus
from embedstack.eval.metrics import evaluate, latency_summary

__all__ = ["build_or_open_index", "corpus_documents", "evaluate_index"]


def corpus_documents(dataset: BeirDataset) -> Iterator[dict[str, Any]]:
    """The dataset's corpus as index documents (id, title, text, metadata)."""
    for doc in iter_corpus(dataset):
        text = doc.text if doc.text.strip() else (doc.title or doc.id)
        yield {"id": doc.id, "title": doc.title, "text": text, "metadata": dict(doc.metadata)}


def _config_key(dataset: BeirDataset, options: dict[str, Any]) -> str:
    blob = json.dumps({"corpus": str(dataset.corpus_path), **options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("key") == key:
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
            "depth": depth,
            **{k: v for k, v in options.items() if v is not None},
            "index": stats.as_dict() if hasattr(stats, "as_dict") else str(stats),
        },
    }
