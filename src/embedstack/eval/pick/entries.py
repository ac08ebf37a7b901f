"""The entries of ``pick.json``: one model, one candidate, the prices and the API line."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack.eval.metrics import evaluate, evaluate_per_query, latency_summary
from embedstack.eval.pick import measure as m
from embedstack.eval.pick.candidates import CandidateSpec, PickOptions
from embedstack.eval.pick.prices import Prices

__all__ = ["MAIN_METRIC", "candidate_entry", "model_entry", "prices_entry"]

MAIN_METRIC = "ndcg@10"


def model_entry(
    spec: Any,
    encoder: Any,
    encode_s: float,
    n_docs: int,
    timing: str,
    share_over: float,
    planned: Any = None,
) -> dict[str, Any]:
    """One model of pick.json; ``planned`` is its
    :class:`~embedstack.eval.pick.plan.ModelPlan` (the weights' precision, the estimate)."""
    return {
        "name": spec.name,
        "model_id": encoder.model_id,
        "full_dim": encoder.dim,
        "max_length": int(getattr(encoder, "max_length", spec.max_length)),
        "languages": list(spec.languages),
        "license": spec.license,
        "matryoshka_dims": list(spec.matryoshka_dims),
        "encode_docs_per_s": n_docs / max(encode_s, 1e-9),
        "encode_s": encode_s,
        "encode_timing": timing,
        "query_prefix": getattr(encoder, "query_prefix", spec.query_prefix),
        "document_prefix": getattr(encoder, "document_prefix", spec.document_prefix),
        "share_docs_over_max_length": share_over,
        "encoder_precision": planned.precision if planned is not None else "float32",
        "int8": planned.int8 if planned is not None else None,
        "estimated_encode_s": planned.estimate_s if planned is not None else None,
        "plan_note": planned.note if planned is not None else "",
    }


def candidate_entry(
    cand: CandidateSpec,
    result: m.CandidateRun,
    qrels: dict[str, Any],
    prices: Prices,
    options: PickOptions,
    models: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], np.ndarray]:
    metrics = evaluate(qrels, result.run, k_values=(10, 100))
    per_query = evaluate_per_query(qrels, result.run, k_values=(10,))
    scores = np.array([per_query.get(q, {}).get(MAIN_METRIC, 0.0) for q in qrels])
    lat = latency_summary(result.wall)
    cpu_s = float(result.cpu.mean())
    model = models.get(cand.model or "")
    entry: dict[str, Any] = {
        "id": cand.id,
        "model": cand.model,
        "dim": cand.dim,
        "full_dim": cand.full_dim,
        "precision": cand.precision,
        "mode": cand.mode,
        "metrics": {k: metrics[k] for k in ("ndcg@10", "recall@100", "mrr@10")},
        "main_metric": MAIN_METRIC,
        "latency_ms_p50": lat["latency_ms_p50"],
        "latency_ms_p99": lat["latency_ms_p99"],
        "latency_ms_mean": lat["latency_ms_mean"],
        "encode_docs_per_s": model["encode_docs_per_s"] if model else None,
        "encoder_precision": model["encoder_precision"] if model else None,
        "bytes_per_doc": result.bytes_per_doc,
        "cost": {
            "usd_per_1m_queries": prices.usd_per_1m_queries(cpu_s),
            "storage_usd_per_month": prices.storage_usd_per_month(
                result.bytes_per_doc * options.corpus_size
            ),
            "cpu_ms_per_query": cpu_s * 1000.0,
        },
        "significance": None,
        "pareto": False,
        "within_budgets": True,
        "budget_misses": [],
    }
    return entry, scores


def prices_entry(
    prices: Prices, doc_tokens: np.ndarray, query_tokens: np.ndarray, corpus_size: int
) -> dict[str, Any]:
    per_query = float(query_tokens.mean()) if query_tokens.size else 0.0
    per_doc = float(doc_tokens.mean()) if doc_tokens.size else 0.0
    api = [
        {
            "name": a.name,
            "usd_per_1m_tokens": a.usd_per_1m_tokens,
            "source": a.source,
            "tokens_per_query": per_query,
            "usd_per_1m_queries": per_query * a.usd_per_1m_tokens,
            "usd_to_embed_corpus": per_doc * corpus_size / 1e6 * a.usd_per_1m_tokens,
        }
        for a in prices.api
    ]
    return {
        "source_file": prices.source_file,
        "cpu_usd_per_hour": prices.cpu_usd_per_hour,
        "storage_usd_per_gb_month": prices.storage_usd_per_gb_month,
        "api": api,
        "notes": list(prices.notes),
    }
