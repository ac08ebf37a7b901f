"""Budgets, significance and the recommendation of ``embedstack pick``.

The rule (applied to the measured candidates, dicts shaped as in ``pick.json``):

1. Keep the candidates on the Pareto front (main metric up, p99 latency down, bytes per
   document down) that meet every budget (p99 <= ``--latency-budget-ms``; bytes per
   document x ``--corpus-size`` <= ``--storage-budget-gb``). A candidate meeting the budgets
   is always dominated by a front candidate that meets them too, since budgets only bound
   latency and size from above.
2. Among those, the one with the best main metric is the *top*.
3. Every kept candidate that is not significantly worse than the top (paired randomization
   test over the same queries, unadjusted p >= 0.05, or a delta >= 0) *and* loses at most
   :data:`MAX_LOSS` (one point of nDCG@10) is *eligible*; the recommendation is the cheapest
   eligible one: fewest bytes per document, then lowest p99, then the best main metric.
   Unadjusted p-values make "not significantly worse" harder to reach than Holm-adjusted
   ones, and the loss cap keeps a small query set (where large losses are not yet
   significant) from trading quality away.
4. If nothing meets the budgets, there is no recommendation; ``unmet_budgets`` says, for
   each budget that cannot be met, the best value reachable (among candidates meeting the
   other budgets) and how far over the limit it is.

Significance against the *best* candidate overall (for the report's table) uses the same
test, with Holm's correction across the comparisons deciding ``significant``.

A task pick (``--task``, :mod:`~embedstack.eval.pick.task_run`) passes its own ``compare``
(the test its task calls for, see :mod:`~embedstack.eval.pick.task_measure`) and a
``context["task"]``; the mode, prefix and evaluation plan then come from
:mod:`~embedstack.eval.pick.task_recommend`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from embedstack.eval.pick.candidates import PickOptions
from embedstack.eval.pick.stats import TEST_NAME, holm, paired_randomization, pareto_front

__all__ = [
    "LONG_DOC_SHARE",
    "Compare",
    "apply_budgets",
    "mark_front",
    "recommend",
    "significance",
    "unmet_budgets",
    "unresolved_deltas",
]

Compare = Callable[[str, str], tuple[float, float]]
"""``compare(baseline_id, other_id) -> (delta, p_value)``: ``delta`` is the other's main
metric minus the baseline's."""

ALPHA = 0.05
MAX_LOSS = 0.01  # the most main metric the recommendation gives up for a cheaper candidate
LONG_DOC_SHARE = 0.10  # warn when more documents than this exceed the model's token limit


def _storage_gb(cand: dict[str, Any], options: PickOptions) -> float:
    return float(cand["bytes_per_doc"]) * options.corpus_size / 1e9


def _values(cand: dict[str, Any], options: PickOptions) -> dict[str, float]:
    return {"latency_ms": float(cand["latency_ms_p99"]), "storage_gb": _storage_gb(cand, options)}


def _limits(options: PickOptions) -> dict[str, float]:
    limits = {"latency_ms": options.latency_budget_ms, "storage_gb": options.storage_budget_gb}
    return {k: float(v) for k, v in limits.items() if v is not None}


def apply_budgets(cands: list[dict[str, Any]], options: PickOptions) -> None:
    """Set ``within_budgets`` and ``budget_misses`` of every candidate in place."""
    limits = _limits(options)
    for cand in cands:
        values = _values(cand, options)
        misses = [
            {"budget": name, "limit": limit, "value": values[name], "over_by": values[name] - limit}
            for name, limit in limits.items()
            if values[name] > limit
        ]
        cand["budget_misses"] = misses
        cand["within_budgets"] = not misses


def mark_front(cands: list[dict[str, Any]], main: str, options: PickOptions) -> None:
    """Set ``pareto`` (rule 1's front on ``metrics[main]``, p99, bytes per document) and, by
    :func:`apply_budgets`, ``within_budgets`` and ``budget_misses`` of every candidate."""
    front = pareto_front(
        [c["metrics"][main] for c in cands],
        [c["latency_ms_p99"] for c in cands],
        [c["bytes_per_doc"] for c in cands],
    )
    for cand, on_front in zip(cands, front, strict=True):
        cand["pareto"] = on_front
    apply_budgets(cands, options)


def unmet_budgets(cands: list[dict[str, Any]], options: PickOptions) -> list[dict[str, Any]]:
    """Budgets no candidate meets: the best value reachable and how far over the limit."""
    limits = _limits(options)
    out = []
    for name, limit in limits.items():
        others = [c for c in cands if all(m["budget"] == name for m in c["budget_misses"])]
        pool = others or cands
        best = min(_values(c, options)[name] for c in pool)
        if best > limit:
            out.append(
                {"budget": name, "limit": limit, "best_value": best, "over_by": best - limit}
            )
    return out


def _rank_key(cand: dict[str, Any]) -> tuple[float, float, float]:
    """What "best" means: the highest main metric; among equal ones (an int8 or binary copy
    of a model can score exactly what its float32 vectors score, e.g. the same k-means
    clustering), the lowest p99 latency, then the fewest bytes per document. ``max`` keeps
    the first of any candidates still equal, so a remaining tie goes to the earliest in
    pick.json's candidate order (the grid's: models as listed, then dims, then precisions).
    Deterministic for given measurements."""
    return (
        float(cand["metrics"][cand["main_metric"]]),
        -float(cand["latency_ms_p99"]),
        -float(cand["bytes_per_doc"]),
    )


def _randomization(per_query: dict[str, np.ndarray], n_permutations: int, seed: int) -> Compare:
    def compare(baseline: str, other: str) -> tuple[float, float]:
        return paired_randomization(
            per_query[baseline], per_query[other], n_permutations=n_permutations, seed=seed
        )

    return compare


def significance(
    cands: list[dict[str, Any]],
    per_query: dict[str, np.ndarray],
    n_permutations: int,
    seed: int,
    *,
    compare: Compare | None = None,
    test_name: str | None = None,
) -> dict[str, Any]:
    """Test the best candidate against each other one; set each ``significance``.

    The best is the highest main metric, ties broken by lower p99 latency, fewer bytes per
    document, then candidate order (:func:`_rank_key`).

    Args:
        compare: the test (default: the paired randomization test over ``per_query``).
        test_name: how ``significance.test`` names it (before the Holm note).

    Returns:
        The best candidate.
    """
    cmp = compare or _randomization(per_query, n_permutations, seed)
    best = max(cands, key=_rank_key)
    others = [c for c in cands if c is not best]
    tests = [cmp(best["id"], c["id"]) for c in others]
    adjusted = holm([p for _, p in tests]) if tests else []
    name = (
        test_name or f"{TEST_NAME}, {n_permutations} permutations (exact when 2^n is fewer)"
    ) + f", Holm-adjusted over {len(tests)} comparisons"
    best["significance"] = {
        "baseline": best["id"],
        "delta": 0.0,
        "p_value": None,
        "p_value_holm": None,
        "significant": False,
        "test": name,
    }
    for cand, (delta, p), p_holm in zip(others, tests, adjusted, strict=True):
        cand["significance"] = {
            "baseline": best["id"],
            "delta": delta,
            "p_value": p,
            "p_value_holm": p_holm,
            "significant": p_holm < ALPHA,
            "test": name,
        }
    return best


def _fmt_p(p: float) -> str:
    return f"p = {p:.3f}" if p >= 0.001 else "p < 0.001"


def recommend(
    cands: list[dict[str, Any]],
    per_query: dict[str, np.ndarray],
    models: dict[str, dict[str, Any]],
    options: PickOptions,
    context: dict[str, Any],
    *,
    compare: Compare | None = None,
) -> dict[str, Any]:
    """The five-part recommendation (model, dimension/precision, mode, prefix, evaluation
    plan) plus warnings and unmet budgets; see the module docstring for the rule.

    Args:
        context: ``evaluation``, ``n_queries``, ``n_docs``, ``share_over`` (per model name:
            share of documents over its token limit) and ``warnings`` (seed rules so far);
            a task pick adds ``task``, ``unit`` (what ``n_queries`` counts) and
            ``test_short`` (the test's name in a sentence).
        compare: the test (default: the paired randomization test over ``per_query``).
    """
    test = {"n_permutations": options.n_permutations, "seed": options.seed}
    cmp = compare or _randomization(per_query, options.n_permutations, options.seed)
    task = context.get("task", "retrieval")
    warnings = list(context.get("warnings", []))
    empty: dict[str, Any] = {
        "candidate": None,
        "model": None,
        "dimension": None,
        "mode": None,
        "prefix": None,
        "evaluation_plan": [],
        "warnings": warnings,
        "unmet_budgets": [],
    }
    kept = [c for c in cands if c["pareto"] and c["within_budgets"]]
    if not kept:
        empty["unmet_budgets"] = unmet_budgets(cands, options)
        return empty
    top = max(kept, key=_rank_key)
    main = top["main_metric"]
    eligible = []
    for cand in kept:
        if cand is top:
            eligible.append((cand, 0.0, 1.0))
            continue
        delta, p = cmp(top["id"], cand["id"])
        if delta >= 0 or (p >= ALPHA and -delta <= MAX_LOSS):
            eligible.append((cand, delta, p))
    chosen, delta, p = min(
        eligible, key=lambda e: (e[0]["bytes_per_doc"], e[0]["latency_ms_p99"], -_rank_key(e[0])[0])
    )
    value = chosen["metrics"][main]
    n = context["n_queries"]
    what = f"{context['evaluation']} {main} {value:.4f} on {n} {context.get('unit', 'queries')}"
    if chosen is top:
        why = f"best {main} among the Pareto-optimal candidates within the budgets ({what})"
    else:
        why = (
            f"not significantly worse than the best within-budget candidate {top['id']} "
            f"({main} {value:.4f} vs {top['metrics'][main]:.4f}, {_fmt_p(p)}, "
            f"{context.get('test_short', 'paired randomization test')}; at most {MAX_LOSS} "
            "lower) and the cheapest such candidate"
        )
    name = chosen["model"]
    spec = models.get(name or "", {})
    model_reason = f"{name}: {why}." if name else f"no embedding model (BM25 alone): {why}."
    rec: dict[str, Any] = {
        **empty,
        "candidate": chosen["id"],
        "model": {"name": name, "reason": model_reason},
    }
    rec["dimension"] = _dimension(chosen, cands, options, spec, main)
    if task != "retrieval":
        from embedstack.eval.pick.task_recommend import task_parts

        rec.update(task_parts(task, chosen, cands, context, spec, main))
        if n < 50:
            warnings.append(
                f"only {n} {context.get('unit', 'examples')}: differences between candidates "
                "are hard to resolve; label more examples before deciding"
            )
        return rec
    rec["mode"] = _mode(chosen, cands, per_query, test, main)
    rec["prefix"] = _prefix(spec)
    rec["evaluation_plan"] = _plan(chosen, cands, context, options, main)
    share = context.get("share_over", {}).get(name)
    limit = spec.get("max_length")
    if name and share is not None and limit and limit <= 512 and share > LONG_DOC_SHARE:
        warnings.append(
            f"long documents: {share:.0%} of the documents exceed {name}'s {limit}-token limit "
            "and were truncated here (pick measures one vector per document, no chunking); "
            "index with chunking (`embedstack index create --chunk-tokens N`) or compare a "
            "longer-context model"
        )
    if n < 50:
        warnings.append(
            f"only {n} queries: differences between candidates are hard to "
            "resolve; judge more queries before deciding"
        )
    return rec


def _same(cands: list[dict[str, Any]], **fields: Any) -> dict[str, Any] | None:
    for cand in cands:
        if all(cand[k] == v for k, v in fields.items()):
            return cand
    return None


def _dimension(
    chosen: dict[str, Any],
    cands: list[dict[str, Any]],
    options: PickOptions,
    spec: dict[str, Any],
    main: str,
) -> dict[str, Any]:
    gb = _storage_gb(chosen, options)
    reason = (
        f"{chosen['bytes_per_doc']:.0f} bytes per document, {gb:,.2f} GB for "
        f"{options.corpus_size:,} documents"
    )
    if options.storage_budget_gb is not None:
        reason += f", within the {options.storage_budget_gb:g} GB storage budget"
    else:
        reason += " (no storage budget given)"
    if chosen["model"] is None:
        return {"dim": None, "precision": None, "reason": reason + ": BM25 postings only."}
    full = _same(
        cands,
        model=chosen["model"],
        dim=chosen["full_dim"],
        precision="float32",
        mode=chosen["mode"],
    )
    if full is not None and full is not chosen and full["metrics"][main] > 0:
        kept = chosen["metrics"][main] / full["metrics"][main]
        reason += (
            f"; keeps {kept:.1%} of the full-dimension float32 {main} in "
            f"{chosen['bytes_per_doc'] / full['bytes_per_doc']:.0%} of the bytes"
        )
    if chosen["dim"] < chosen["full_dim"] and chosen["dim"] not in spec.get("matryoshka_dims", []):
        reason += (
            "; the model is not Matryoshka-trained at this size, so the truncation's "
            "cost was measured here, not assumed"
        )
    return {"dim": chosen["dim"], "precision": chosen["precision"], "reason": reason + "."}


def _mode(
    chosen: dict[str, Any],
    cands: list[dict[str, Any]],
    per_query: dict[str, np.ndarray],
    test: dict[str, int],
    main: str,
) -> dict[str, Any]:
    mode = chosen["mode"]
    text = {
        "dense": "dense vectors alone",
        "hybrid": "dense + BM25 fused with RRF (k = 60)",
        "bm25": "BM25 alone",
    }.get(mode, mode)
    parts = []
    for other_mode in ("dense", "hybrid", "bm25"):
        if other_mode == mode:
            continue
        fields = (
            {"mode": other_mode}
            if other_mode == "bm25"
            else {
                "mode": other_mode,
                "model": chosen["model"],
                "dim": chosen["dim"],
                "precision": chosen["precision"],
            }
        )
        if chosen["model"] is None and other_mode != "bm25":
            continue
        other = _same(cands, **fields)
        if other is None:
            continue
        delta, p = paired_randomization(per_query[other["id"]], per_query[chosen["id"]], **test)
        sig = "significant" if p < ALPHA else "not significant"
        parts.append(f"{main} {delta:+.4f} vs {other_mode} ({_fmt_p(p)}, {sig})")
    reason = text + (": " + "; ".join(parts) if parts else "") + "."
    return {"mode": mode, "reason": reason}


def _prefix(spec: dict[str, Any]) -> dict[str, Any]:
    query = spec.get("query_prefix", "") or ""
    document = spec.get("document_prefix", "") or ""
    if not spec:
        reason = "BM25 needs no prefix or template."
    elif query or document:
        reason = (
            "the model was trained with these prefixes; embedstack adds them itself "
            "(encode_queries / encode_documents), never add them by hand"
        )
    else:
        reason = "the model was trained without prefixes: embed queries and documents as they are"
    return {"query_prefix": query, "document_prefix": document, "reason": reason}


def _plan(
    chosen: dict[str, Any],
    cands: list[dict[str, Any]],
    context: dict[str, Any],
    options: PickOptions,
    main: str,
) -> list[str]:
    n = context["n_queries"]
    plan = []
    if context["evaluation"] == "proxy":
        plan.append(
            "These are proxy numbers (queries built from the corpus itself): judge "
            "50-100 real user queries, save them as a BEIR folder (queries.jsonl, "
            "qrels/test.tsv) and re-run `embedstack pick` on it before deciding."
        )
    unresolved = unresolved_deltas(cands)
    if unresolved:
        plan.append(
            f"With {n} queries, {main} differences up to {max(unresolved):.4f} were not "
            "significant here: grow the judged set to resolve smaller ones."
        )
    plan.append(
        f"Keep these {n} queries as a fixed regression set; re-run `embedstack pick` "
        "when the model, the corpus or the query traffic changes, and switch only on "
        "a significant difference."
    )
    plan.append(
        f"Latency was measured on {context['n_docs']:,} documents with exact search; "
        f"re-measure p99 on the serving hardware at {options.corpus_size:,} documents "
        "(an HNSW index above a few million)."
    )
    plan.append(f"Monitor {main} on the regression set, p99 latency and index size in production.")
    return plan


def unresolved_deltas(cands: list[dict[str, Any]]) -> list[float]:
    """The sizes of the differences from the best that the paired test could not call
    significant (candidates without a test left out): what a larger judged set would
    resolve."""
    return [
        abs(c["significance"]["delta"])
        for c in cands
        if c.get("significance")
        and not c["significance"]["significant"]
        and c["significance"]["p_value"] is not None
    ]
