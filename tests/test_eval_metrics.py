"""Tests for embedstack.eval.metrics: hand-computed values, pytrec_eval and scipy oracles."""

from __future__ import annotations

import doctest
import random
import types
from math import log2

import numpy as np
import pytest
import pytrec_eval
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import embedstack.eval as ev
from embedstack.errors import InvalidInput
from embedstack.eval import evaluate, evaluate_per_query, latency_summary, spearman
from embedstack.eval import metrics as metrics_module


def test_all_matches_exports() -> None:
    public = {name for name in dir(ev) if not name.startswith("_")}
    modules = {n for n in public if isinstance(getattr(ev, n), types.ModuleType)}
    modules.add("annotations")
    assert set(ev.__all__) == public - modules


def test_doctests() -> None:
    for module in (ev, metrics_module, ev.trec):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0


# --------------------------------------------------------------------------- hand-made


BINARY_QRELS = {"q1": {"d1": 1, "d3": 1}}
BINARY_RUN = {"q1": {"d2": 0.9, "d1": 0.8, "d4": 0.7, "d3": 0.6}}


def test_binary_relevance_formulas() -> None:
    s = evaluate(BINARY_QRELS, BINARY_RUN, k_values=[1, 3, 5, 10])
    assert s["ndcg@1"] == 0.0
    assert s["ndcg@3"] == pytest.approx((1 / log2(3)) / (1 / log2(2) + 1 / log2(3)))
    assert s["ndcg@5"] == pytest.approx((1 / log2(3) + 1 / log2(5)) / (1 / log2(2) + 1 / log2(3)))
    assert s["recall@1"] == 0.0
    assert s["recall@3"] == pytest.approx(1 / 2)
    assert s["recall@5"] == pytest.approx(2 / 2)
    assert s["precision@3"] == pytest.approx(1 / 3)
    assert s["map@3"] == pytest.approx((1 / 2) / 2)
    assert s["map@5"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert s["mrr@1"] == 0.0
    assert s["mrr@3"] == pytest.approx(1 / 2)


def test_key_names_and_order() -> None:
    s = evaluate(BINARY_QRELS, BINARY_RUN, k_values=[3, 1])
    assert list(s) == [
        f"{m}@{k}" for m in ("ndcg", "map", "recall", "precision", "mrr") for k in (1, 3)
    ]


def test_k_larger_than_results() -> None:
    s = evaluate(BINARY_QRELS, BINARY_RUN, k_values=[10, 1000])
    # trec_eval's P@k divides by k even when fewer than k documents are retrieved.
    assert s["precision@10"] == pytest.approx(2 / 10)
    assert s["precision@1000"] == pytest.approx(2 / 1000)
    assert s["recall@1000"] == 1.0
    assert s["ndcg@10"] == s["ndcg@1000"]
    assert s["ndcg@10"] == pytest.approx((1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3)))
    assert s["mrr@1000"] == pytest.approx(1 / 2)


def test_graded_relevance_uses_linear_gain() -> None:
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"b": 0.9, "c": 0.8, "a": 0.7}}
    s = evaluate(qrels, run, k_values=[1, 3])
    idcg3 = 2 / log2(2) + 1 / log2(3)
    assert s["ndcg@3"] == pytest.approx((1 / log2(2) + 0 + 2 / log2(4)) / idcg3)
    assert s["ndcg@1"] == pytest.approx((1 / log2(2)) / (2 / log2(2)))
    assert s["recall@1"] == pytest.approx(1 / 2)  # relevant means qrel >= 1
    assert s["precision@3"] == pytest.approx(2 / 3)
    assert s["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert s["mrr@1"] == 1.0


def test_query_with_zero_relevant_docs_scores_zero_and_counts() -> None:
    qrels = {"good": {"a": 1}, "none": {"x": 0}}
    run = {"good": {"a": 1.0}, "none": {"x": 1.0, "y": 0.5}}
    per_query = evaluate_per_query(qrels, run, k_values=[1, 10])
    assert set(per_query) == {"good", "none"}
    assert all(v == 0.0 for v in per_query["none"].values())
    s = evaluate(qrels, run, k_values=[1, 10])
    assert s["ndcg@10"] == pytest.approx((1 + 0) / 2)
    assert s["mrr@10"] == pytest.approx((1 + 0) / 2)


def test_empty_ranking_scores_zero_and_counts() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    s = evaluate(qrels, {"q1": {"a": 1.0}, "q2": {}}, k_values=[1])
    assert s["ndcg@1"] == pytest.approx(1 / 2)
    assert s["mrr@1"] == pytest.approx(1 / 2)


def test_query_missing_from_run_follows_beir() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}, "not-judged": {"a": 1.0}}
    assert set(evaluate_per_query(qrels, run, k_values=[1])) == {"q1"}
    s = evaluate(qrels, run, k_values=[1])
    # pytrec_eval scores only q1, and BEIR averages over what it scores ...
    assert s["ndcg@1"] == 1.0
    assert s["recall@1"] == 1.0
    # ... while BEIR's MRR divides by the number of judged queries.
    assert s["mrr@1"] == pytest.approx((1 + 0) / 2)


def test_ties_trec_eval_by_docid_desc_mrr_by_run_order() -> None:
    qrels = {"q": {"a": 1}}
    first = evaluate(qrels, {"q": {"a": 1.0, "b": 1.0}}, k_values=[1, 2])
    # trec_eval breaks the tie by doc id descending, so "b" ranks first.
    assert first["ndcg@1"] == 0.0
    assert first["ndcg@2"] == pytest.approx((1 / log2(3)) / 1)
    # BEIR's MRR sorts stably: "a" was inserted first, so it ranks first.
    assert first["mrr@1"] == 1.0
    second = evaluate(qrels, {"q": {"b": 1.0, "a": 1.0}}, k_values=[1, 2])
    assert second["ndcg@1"] == 0.0
    assert second["mrr@1"] == 0.0
    assert second["mrr@2"] == pytest.approx(1 / 2)


def test_identical_ids_ignored_by_default() -> None:
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 0.99, "d1": 0.5}}
    s = evaluate(qrels, run, k_values=[1, 2])
    assert s["precision@1"] == 1.0
    assert s["mrr@1"] == 1.0
    assert run == {"q1": {"q1": 0.99, "d1": 0.5}}  # the caller's run is untouched
    kept = evaluate(qrels, run, k_values=[1, 2], ignore_identical_ids=False)
    assert kept["precision@1"] == 0.0
    assert kept["mrr@1"] == 0.0
    assert kept["mrr@2"] == pytest.approx(1 / 2)
    assert kept["ndcg@2"] == pytest.approx(1 / log2(3))


def test_identical_id_that_is_judged_relevant_still_counts_in_denominators() -> None:
    qrels = {"q1": {"q1": 1, "d1": 1}}
    s = evaluate(qrels, {"q1": {"q1": 0.9, "d1": 0.5}}, k_values=[2])
    assert s["recall@2"] == pytest.approx(1 / 2)
    assert s["ndcg@2"] == pytest.approx(1 / (1 + 1 / log2(3)))


def test_mrr_counts_only_within_top_k() -> None:
    qrels = {"q": {"d4": 1}}
    run = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6, "d5": 0.5}}
    s = evaluate(qrels, run, k_values=[1, 3, 5])
    assert s["mrr@1"] == 0.0
    assert s["mrr@3"] == 0.0
    assert s["mrr@5"] == pytest.approx(1 / 4)


def test_mrr_uses_first_relevant_and_ignores_zero_grades() -> None:
    qrels = {"q": {"d1": 0, "d2": 2, "d3": 1}}
    run = {"q": {"d1": 0.9, "d3": 0.8, "d2": 0.7}}
    assert evaluate(qrels, run, k_values=[3])["mrr@3"] == pytest.approx(1 / 2)


def test_run_need_not_be_sorted() -> None:
    shuffled = {"q1": {"d3": 0.6, "d4": 0.7, "d1": 0.8, "d2": 0.9}}
    assert evaluate(BINARY_QRELS, shuffled) == evaluate(BINARY_QRELS, BINARY_RUN)


@pytest.mark.parametrize(
    ("qrels", "run", "k_values", "match"),
    [
        ({}, {"q": {"a": 1.0}}, [1], "qrels is empty"),
        ({"q": {"a": 1}}, {"other": {"a": 1.0}}, [1], "none of the run"),
        ({"q": {"a": 1}}, {"q": {"a": 1.0}}, [], "k_values is empty"),
        ({"q": {"a": 1}}, {"q": {"a": 1.0}}, [0], "positive integers"),
        ({"q": {"a": 1}}, {"q": {"a": 1.0}}, [True], "positive integers"),
        ({"q": {"a": 0.5}}, {"q": {"a": 1.0}}, [1], "must be an integer"),
        ({"q": {"a": 1}}, {"q": {"a": float("nan")}}, [1], "finite"),
        ({"q": {"a": 1}}, {"q": {"a": "high"}}, [1], "not a number"),
        ({1: {"a": 1}}, {"q": {"a": 1.0}}, [1], "str query ids"),
    ],
)
def test_invalid_input(qrels: object, run: object, k_values: list[int], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        evaluate(qrels, run, k_values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- oracle


def _random_case(seed: int) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(40)] + [f"q{i}" for i in range(5)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(25):
        qid = f"q{q}"
        if rng.random() < 0.9:
            qrels[qid] = {
                d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 8))
            }
        if rng.random() < 0.85:
            # Coarse scores so that ties happen; sometimes retrieve the query itself.
            run[qid] = {d: rng.randint(0, 10) / 10 for d in rng.sample(docs, rng.randint(0, 30))}
    qrels.setdefault("q0", {"d0": 1})
    run.setdefault("q0", {"d0": 0.5})
    return qrels, run


def _beir_reference(
    qrels: dict[str, dict[str, int]],
    run: dict[str, dict[str, float]],
    ks: list[int],
    ignore_identical_ids: bool,
) -> dict[str, float]:
    """BEIR's EvaluateRetrieval.evaluate + custom_metrics.mrr, re-typed from their logic."""
    results = {q: dict(d) for q, d in run.items()}
    if ignore_identical_ids:
        for qid, rels in results.items():
            for pid in list(rels):
                if qid == pid:
                    results[qid].pop(pid)
    cut = ",".join(map(str, ks))
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels, {f"map_cut.{cut}", f"ndcg_cut.{cut}", f"recall.{cut}", f"P.{cut}"}
    )
    scores = evaluator.evaluate(results)
    out: dict[str, float] = {}
    for name, trec in (("ndcg", "ndcg_cut"), ("map", "map_cut"), ("recall", "recall")):
        for k in ks:
            out[f"{name}@{k}"] = sum(s[f"{trec}_{k}"] for s in scores.values()) / len(scores)
    for k in ks:
        out[f"precision@{k}"] = sum(s[f"P_{k}"] for s in scores.values()) / len(scores)
    for k in ks:
        total = 0.0
        for qid, doc_scores in results.items():
            if qid not in qrels:
                continue
            top = sorted(doc_scores.items(), key=lambda item: item[1], reverse=True)[:k]
            relevant = {d for d, r in qrels[qid].items() if r > 0}
            for rank, (did, _) in enumerate(top):
                if did in relevant:
                    total += 1.0 / (rank + 1)
                    break
        out[f"mrr@{k}"] = total / len(qrels)
    return out


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("ignore_identical_ids", [True, False])
def test_matches_beir_reference_on_random_runs(seed: int, ignore_identical_ids: bool) -> None:
    qrels, run = _random_case(seed)
    ks = [1, 3, 5, 10, 100]
    ours = evaluate(qrels, run, ks, ignore_identical_ids=ignore_identical_ids)
    ref = _beir_reference(qrels, run, ks, ignore_identical_ids)
    assert set(ours) == set(ref)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("seed", range(5))
def test_per_query_matches_pytrec_eval(seed: int) -> None:
    qrels, run = _random_case(seed)
    ours = evaluate_per_query(qrels, run, [5, 10], ignore_identical_ids=False)
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.5,10", "P.5,10"}).evaluate(run)
    assert set(ours) == set(direct)
    for qid, values in direct.items():
        assert ours[qid]["ndcg@10"] == values["ndcg_cut_10"]
        assert ours[qid]["precision@5"] == values["P_5"]


# --------------------------------------------------------------------------- spearman


def test_spearman_formula_with_ties() -> None:
    # x ranks 1,2,3,4; y = (10, 20, 30, 20) ranks 1, 2.5, 4, 2.5.
    rx = np.array([1, 2, 3, 4]) - 2.5
    ry = np.array([1, 2.5, 4, 2.5]) - 2.5
    expected = (rx @ ry) / np.sqrt((rx @ rx) * (ry @ ry))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 20]) == pytest.approx(expected)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-4, 4), st.floats(-1e6, 1e6, allow_nan=False, width=32)),
        min_size=2,
        max_size=60,
    )
)
def test_spearman_matches_scipy(pairs: list[tuple[int, float]]) -> None:
    stats = pytest.importorskip("scipy.stats")
    x = [float(a) for a, _ in pairs]
    y = [round(b, 1) for _, b in pairs]
    assume(len(set(x)) > 1 and len(set(y)) > 1)
    expected = stats.spearmanr(x, y).statistic
    assert spearman(x, y) == pytest.approx(expected, abs=1e-9)


def test_spearman_matches_scipy_seeded() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 500))
        x = rng.integers(0, 6, n).astype(float)  # many ties
        y = x + rng.normal(0, 2, n)
        if len(set(x)) < 2:
            continue
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        ([1, 2, 3], [1, 2], "differ in length"),
        ([1], [1], "at least 2"),
        ([1, 1, 1], [1, 2, 3], "constant"),
        ([1, 2, float("nan")], [1, 2, 3], "NaN"),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4]], "one-dimensional"),
        (["a", "b"], [1, 2], "numbers"),
    ],
)
def test_spearman_invalid(x: object, y: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        spearman(x, y)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- latency


def test_latency_summary_linear_percentiles() -> None:
    s = latency_summary([0.010, 0.020, 0.030, 0.040])
    assert list(s) == ["latency_ms_p50", "latency_ms_p99", "latency_ms_mean"]
    assert s["latency_ms_p50"] == pytest.approx((20 + 30) / 2)
    # Linear interpolation at position 0.99 * (n - 1) = 2.97 between 30 ms and 40 ms.
    assert s["latency_ms_p99"] == pytest.approx(30 + 0.97 * (40 - 30))
    assert s["latency_ms_mean"] == pytest.approx((10 + 20 + 30 + 40) / 4)
    single = latency_summary(np.array([0.5]))
    assert single == {"latency_ms_p50": 500.0, "latency_ms_p99": 500.0, "latency_ms_mean": 500.0}


@pytest.mark.parametrize("seconds", [[], [-0.1, 0.2], [float("inf")]])
def test_latency_summary_invalid(seconds: list[float]) -> None:
    with pytest.raises(InvalidInput):
        latency_summary(seconds)
