"""Evaluation: BEIR/STS dataset readers, BEIR-exact retrieval metrics, TREC run files.

Example:
    >>> from embedstack.eval import evaluate
    >>> evaluate({"q": {"a": 1}}, {"q": {"a": 0.9, "b": 0.1}}, k_values=[1])["ndcg@1"]
    1.0
"""

from __future__ import annotations

from embedstack.eval.datasets import (
    BeirDataset,
    Document,
    StsData,
    iter_corpus,
    load_beir,
    load_corpus,
    load_sts,
)
from embedstack.eval.metrics import (
    DEFAULT_K_VALUES,
    evaluate,
    evaluate_per_query,
    latency_summary,
    spearman,
)
from embedstack.eval.runner import dense_retrieval, evaluate_dense, evaluate_sts
from embedstack.eval.trec import read_trec_run, write_trec_run

__all__ = [
    "DEFAULT_K_VALUES",
    "BeirDataset",
    "Document",
    "StsData",
    "dense_retrieval",
    "evaluate",
    "evaluate_dense",
    "evaluate_sts",
    "evaluate_per_query",
    "iter_corpus",
    "latency_summary",
    "load_beir",
    "load_corpus",
    "load_sts",
    "read_trec_run",
    "spearman",
    "write_trec_run",
]
