"""MTEB task types on local files: one entry point, :func:`evaluate_task`.

Besides retrieval (a BEIR folder) and STS (an STS-B file), an encoder can be measured on the
other MTEB task types, computed as MTEB computes them (see each module): ``classification``
(logistic regression on embeddings, :mod:`.classification`), ``clustering`` (V-measure of
mini-batch k-means, :mod:`.clustering`), ``pair-classification`` (best-threshold accuracy,
F1 and average precision of four similarity functions, :mod:`.pair_classification`) and
``reranking`` (MAP and MRR@10 over each query's candidates, :mod:`.reranking`). The file
formats are described in :mod:`.formats`. scikit-learn (the ``eval`` extra) is imported only
when a task needs it.

Example:
    >>> from embedstack import HashEncoder
    >>> report = evaluate_task(HashEncoder(64), "pairs.jsonl", "pair-classification")
    ...     # doctest: +SKIP
    >>> report["main_metric"], report["task"]  # doctest: +SKIP
    ('max_ap', 'pair-classification')
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

from embedstack.encoders.base import TextEncoder
from embedstack.errors import DimensionMismatch, InvalidInput
from embedstack.eval.tasks.options import TaskOptions

__all__ = ["MAIN_METRICS", "TASKS", "TaskOptions", "evaluate_task"]

TASKS = ("retrieval", "sts", "classification", "clustering", "pair-classification", "reranking")

MAIN_METRICS = {
    "retrieval": "ndcg@10",
    "sts": "spearman",
    "classification": "accuracy",
    "clustering": "v_measure",
    "pair-classification": "max_ap",
    "reranking": "map",
}


def _retrieval(encoder: TextEncoder, path: Path, options: TaskOptions) -> dict[str, Any]:
    from embedstack.eval.datasets import load_beir
    from embedstack.eval.runner import evaluate_dense

    dataset = load_beir(path, split=options.split)
    report = evaluate_dense(encoder, dataset, dim=options.dim)
    report["n_examples"] = report["n_queries"]
    return report


def _sts(encoder: TextEncoder, path: Path, options: TaskOptions) -> dict[str, Any]:
    from embedstack.eval.datasets import load_sts
    from embedstack.eval.runner import evaluate_sts

    report = evaluate_sts(encoder, load_sts(path), dim=options.dim)
    report["n_examples"] = report["n_pairs"]
    return report


def _classification(encoder: TextEncoder, path: Path, options: TaskOptions) -> dict[str, Any]:
    from embedstack.eval.tasks.classification import evaluate_classification
    from embedstack.eval.tasks.formats import read_classification

    return evaluate_classification(encoder, read_classification(path, options.split), options)


def _clustering(encoder: TextEncoder, path: Path, options: TaskOptions) -> dict[str, Any]:
    from embedstack.eval.tasks.clustering import evaluate_clustering
    from embedstack.eval.tasks.formats import read_clustering

    return evaluate_clustering(encoder, read_clustering(path, options.split), options)


def _pairs(encoder: TextEncoder, path: Path, options: TaskOptions) -> dict[str, Any]:
    from embedstack.eval.tasks.formats import read_pairs
    from embedstack.eval.tasks.pair_classification import evaluate_pair_classification

    return evaluate_pair_classification(encoder, read_pairs(path, options.split), options)


def _reranking(encoder: TextEncoder, path: Path, options: TaskOptions) -> dict[str, Any]:
    from embedstack.eval.tasks.formats import read_reranking
    from embedstack.eval.tasks.reranking import evaluate_reranking

    return evaluate_reranking(encoder, read_reranking(path, options.split), options)


_RUNNERS: dict[str, Callable[[TextEncoder, Path, TaskOptions], dict[str, Any]]] = {
    "retrieval": _retrieval,
    "sts": _sts,
    "classification": _classification,
    "clustering": _clustering,
    "pair-classification": _pairs,
    "reranking": _reranking,
}


def evaluate_task(
    encoder: TextEncoder, path: str | PathLike[str], task: str, **options: Any
) -> dict[str, Any]:
    """Evaluate ``encoder`` on one task read from ``path``; the report of ``embedstack eval``.

    Args:
        encoder: Any :class:`~embedstack.encoders.base.TextEncoder`.
        path: The task's data: a BEIR folder (retrieval), an STS-B file (sts), or a ``.jsonl``
            file or a folder of ``<split>.jsonl`` files (the others, see :mod:`.formats`).
        task: One of :data:`TASKS`.
        **options: Fields of :class:`TaskOptions` (``split``, ``dim``, ``seed``,
            ``n_experiments``, ``samples_per_label``, ...); MTEB's defaults otherwise.

    Returns:
        ``{"task", "main_metric", "main_score", <every metric of the task>, "n_examples",
        "config": {"task", "path", <the options>, <the encoder's settings>}}``: the main
        metric is ``ndcg@10`` (retrieval), ``spearman`` (sts), ``accuracy``
        (classification), ``v_measure`` (clustering), ``max_ap`` (pair-classification) or
        ``map`` (reranking), all higher-is-better in [0, 1] (Spearman in [-1, 1]).

    Raises:
        InvalidInput: An unknown task or option, a missing or malformed file (the message
            names the file and line), or data with nothing to evaluate.
        DimensionMismatch: ``dim`` larger than the encoder's.
        MissingDependency: scikit-learn is not installed (the ``eval`` extra).
    """
    if task not in _RUNNERS:
        raise InvalidInput(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    settings = TaskOptions.from_kwargs(options)
    if settings.dim is not None and settings.dim > encoder.dim:
        raise DimensionMismatch(f"dim must be in [1, {encoder.dim}], got {settings.dim}")
    from embedstack.eval.runner import encoder_config

    source = Path(path)
    metrics = _RUNNERS[task](encoder, source, settings)
    inner = metrics.pop("config", {})  # retrieval and sts: their own settings
    main = MAIN_METRICS[task]
    return {
        "task": task,
        "main_metric": main,
        "main_score": float(metrics[main]),
        **metrics,
        "config": {
            **inner,
            "task": task,
            "path": str(source),
            **vars(settings),
            "dim": settings.dim or encoder.dim,
            **encoder_config(encoder),
        },
    }
