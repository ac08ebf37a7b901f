"""Builders of pick.json and ``embedstack eval`` result dicts for the report tests."""

from __future__ import annotations

import copy
from typing import Any

SIG_TEST = "paired randomization, 10000 permutations"
BYTES = {"float32": 4.0, "int8": 1.0, "binary": 0.125}


def candidate(
    model: str,
    dim: int,
    precision: str,
    mode: str,
    score: float,
    p99: float,
    *,
    full_dim: int = 384,
    bytes_per_doc: float | None = None,
    usd: float | None = 0.5,
    misses: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One candidate as ``embedstack pick`` writes it (significance filled in by ``pick``)."""
    size = bytes_per_doc if bytes_per_doc is not None else dim * BYTES[precision]
    return {
        "id": f"{model}|{dim}|{precision}|{mode}",
        "model": model,
        "dim": dim,
        "full_dim": full_dim,
        "precision": precision,
        "mode": mode,
        "metrics": {"ndcg@10": score, "recall@100": min(1.0, score + 0.2), "mrr@10": score - 0.03},
        "main_metric": "ndcg@10",
        "latency_ms_p50": p99 / 2,
        "latency_ms_p99": p99,
        "encode_docs_per_s": 30.0,
        "bytes_per_doc": size,
        "cost": {"usd_per_1m_queries": usd, "storage_usd_per_month": size * 1e6 / 1e9 * 0.1},
        "significance": None,
        "pareto": False,
        "within_budgets": not misses,
        "budget_misses": misses or [],
    }


def pick(
    candidates: list[dict[str, Any]],
    *,
    evaluation: str = "judged",
    name: str = "scifact",
    recommended: str | None = "first",
    unmet: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A pick.json around ``candidates``; the best one is the significance baseline and, with
    ``recommended="first"``, the recommendation."""
    candidates = copy.deepcopy(candidates)
    best = max(candidates, key=lambda c: c["metrics"]["ndcg@10"])

    def axes(c: dict[str, Any]) -> tuple[float, float, float]:  # all "higher is better"
        return (c["metrics"]["ndcg@10"], -c["latency_ms_p99"], -c["bytes_per_doc"])

    for c in candidates:  # brute force, as the definition reads: nobody at least as good
        others = [axes(o) for o in candidates if o is not c]  # everywhere and better somewhere
        mine = axes(c)
        c["pareto"] = not any(
            all(o >= m for o, m in zip(other, mine, strict=True)) and other != mine
            for other in others
        )
    for n, c in enumerate(candidates):
        delta = c["metrics"]["ndcg@10"] - best["metrics"]["ndcg@10"]
        p = 1.0 if c is best else round(0.001 + 0.2 * n / len(candidates), 4)
        c["significance"] = {"baseline": best["id"], "delta": delta, "p_value": p,
                             "significant": p < 0.05, "test": SIG_TEST}  # fmt: skip
    chosen = best["id"] if recommended == "first" else recommended
    chosen_c = next((c for c in candidates if c["id"] == chosen), best)
    return {
        "kind": "embedstack.pick",
        "format_version": 1,
        "created": "2026-12-05T18:00:00Z",
        "command": f"embedstack pick ../shared/datasets/{name} --out /tmp/p",
        "elapsed_s": 1234.5,
        "task": "retrieval",
        "data": {
            "path": f"../shared/datasets/{name}",
            "name": name,
            "evaluation": evaluation,
            "proxy_note": "each document's title is its query" if evaluation == "proxy" else None,
            "n_docs": 5183,
            "n_queries": 300,
            "queries_subsampled": True,
            "subsample_note": "300 of 1109 queries, to finish within --time-budget-min 30",
            "mean_doc_tokens": 240.1,
            "share_docs_over_512_tokens": 0.02,
        },  # fmt: skip
        "budgets": {
            "latency_ms": 20,
            "storage_gb": None,
            "corpus_size": 1000000,
            "time_budget_min": 30,
        },  # fmt: skip
        "prices": {
            "source_file": "builtin",
            "cpu_usd_per_hour": 0.05,
            "storage_usd_per_gb_month": 0.1,
            "api": [
                {
                    "name": "text-embedding-3-small",
                    "usd_per_1m_tokens": 0.02,
                    "source": "openai.com/api/pricing",
                }
            ],
            "notes": ["CPU price: a 2-core cloud VM"],
        },  # fmt: skip
        "models": [
            {
                "name": m,
                "model_id": f"{m}@abc",
                "full_dim": 384,
                "max_length": 256,
                "languages": ["en"],
                "license": "apache-2.0",
                "matryoshka_dims": [],
                "encode_docs_per_s": 27.6,
                "encode_s": 187.0,
                "query_prefix": "",
                "document_prefix": "",
            }
            for m in sorted({c["model"] for c in candidates if c["model"]})
        ],  # fmt: skip
        "candidates": candidates,
        "recommendation": {
            "candidate": chosen,
            "model": {"name": chosen_c["model"] if chosen else None, "reason": "best on the front"},
            "dimension": {
                "dim": chosen_c["dim"],
                "precision": chosen_c["precision"],
                "reason": "fits the storage budget",
            },
            "mode": {"mode": chosen_c["mode"], "reason": "hybrid adds BM25's exact matches"},
            "prefix": {"query_prefix": "", "document_prefix": "", "reason": "the model has none"},
            "evaluation_plan": ["label 50 real queries", "re-run pick on them"],
            "warnings": ["Matryoshka truncation below 64 dims refused"],
            "unmet_budgets": unmet or [],
        },  # fmt: skip
    }


def grid() -> list[dict[str, Any]]:
    """Two models at several dims and precisions, dense and hybrid, plus BM25: scores and
    latencies from formulas, so every plot has data."""
    out = []
    for model, base, full, speed in (("alpha", 0.62, 384, 8.0), ("beta", 0.66, 768, 20.0)):
        for dim in (full, 256, 128):
            for precision, loss in (("float32", 0.0), ("int8", 0.004), ("binary", 0.03)):
                for mode, gain, extra in (("dense", 0.0, 0.0), ("hybrid", 0.02, 3.0)):
                    score = base + gain - loss - 0.02 * (full - dim) / full
                    p99 = round(speed + extra + dim / 256, 3)
                    out.append(candidate(model, dim, precision, mode, round(score, 4), p99,
                                         full_dim=full, usd=p99 / 40))  # fmt: skip
    out.append(candidate("gamma", 384, "float32", "dense", 0.55, 50.0))  # dominated by all
    out.append(candidate("bm25", 0, "float32", "bm25", 0.60, 2.0, bytes_per_doc=900.0))
    out[-1].update(id="bm25", model=None, dim=None, full_dim=None, precision=None)
    return out


def eval_result(model: str, dim: int, precision: str, mode: str, ndcg: float) -> dict[str, Any]:
    """What ``embedstack eval --json`` writes (dense: no document count)."""
    config: dict[str, Any] = {"dataset": "scifact", "split": "test", "mode": mode,
                              "retriever": mode, "model": model, "dim": dim, "full_dim": 384,
                              "precision": precision, "depth": 1000}  # fmt: skip
    if mode != "dense":
        config["index"] = {"n_docs": 100, "bytes_total": 200_000, "dim": dim}
    return {
        "ndcg@10": ndcg, "recall@100": 0.9, "mrr@10": ndcg - 0.02, "map@100": ndcg - 0.05,
        "ndcg@1": 0.5, "n_queries": 300, "latency_ms_p50": 5.0, "latency_ms_p99": 9.0,
        "latency_ms_mean": 5.5, "index_bytes": 200_000, "config": config,
    }  # fmt: skip
