"""`embedstack pick`'s pure parts: the paired test, Holm, the Pareto front, the grid, model
selection, budgets and the recommendation rule, on hand-made inputs."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import HashEncoder, ModelSpec, register_model, unregister_model
from embedstack.errors import InvalidInput, ModelNotFound
from embedstack.eval.pick import (
    PickOptions,
    build_grid,
    holm,
    load_prices,
    paired_randomization,
    pareto_front,
    select_models,
)
from embedstack.eval.pick.recommend import (
    apply_budgets,
    mark_front,
    recommend,
    significance,
    unmet_budgets,
)


def test_doctests() -> None:
    from embedstack.eval.pick import prices, stats

    for module in (stats, prices):
        assert doctest.testmod(module).failed == 0


# --- paired randomization test -------------------------------------------------------------


def test_paired_test_exact_small_example() -> None:
    # d = (1, 2, 3): of the 8 sign sets only (+,+,+) and (-,-,-) reach |sum| = 6
    delta, p = paired_randomization([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert delta == pytest.approx((1 + 2 + 3) / 3)
    assert p == pytest.approx(2 / 8)
    # d = (1, 1, 1, 1, -1): each signed d_i is +-1, so the sum is 2j - 5 with j plus signs;
    # |2j - 5| >= 3 for j in {0, 1, 4, 5}: C(5,0) + C(5,1) + C(5,4) + C(5,5) = 12 of 32
    delta, p = paired_randomization(np.zeros(5), [1.0, 1.0, 1.0, 1.0, -1.0])
    assert (delta, p) == (pytest.approx(3 / 5), pytest.approx(12 / 32))


def test_paired_test_identical_runs_give_p_one() -> None:
    scores = np.random.default_rng(1).random(300)
    assert paired_randomization(scores, scores) == (0.0, 1.0)
    assert paired_randomization(scores[:5], scores[:5]) == (0.0, 1.0)  # exact branch too


def test_paired_test_hugely_better_run_gives_small_p() -> None:
    rng = np.random.default_rng(2)
    base = rng.random(200) * 0.5
    delta, p = paired_randomization(base, base + 0.3, n_permutations=10_000, seed=3)
    assert delta == pytest.approx(0.3)
    assert p == pytest.approx(1 / 10_001)


def test_paired_test_monte_carlo_agrees_with_exact() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random(12), rng.random(12) + 0.1
    exact = paired_randomization(a, b, n_permutations=10_000)[1]  # 2^12 <= 10,000: exact
    sampled = paired_randomization(a, b, n_permutations=2_000, seed=5)[1]
    assert abs(exact - sampled) < 0.04


def test_paired_test_rejects_bad_input() -> None:
    with pytest.raises(InvalidInput, match="length"):
        paired_randomization([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInput):
        paired_randomization([], [])
    with pytest.raises(InvalidInput, match="NaN"):
        paired_randomization([1.0, float("nan")], [1.0, 2.0])


def test_holm_by_hand() -> None:
    # sorted: 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> made monotone: 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


# --- Pareto front ---------------------------------------------------------------------------


def test_pareto_front_hand_made_points() -> None:
    #          A     B (< A)  C (best q)  D (= A)  E (small)  F (dominated by E)
    quality = [0.5, 0.4, 0.6, 0.5, 0.3, 0.3]
    latency = [10.0, 12.0, 20.0, 10.0, 5.0, 6.0]
    size = [100.0, 100.0, 400.0, 100.0, 50.0, 50.0]
    assert pareto_front(quality, latency, size) == [True, False, True, True, True, False]


# --- grid and models ------------------------------------------------------------------------


@pytest.fixture()
def fake_models() -> Iterator[dict[str, str]]:
    names = {
        "en384": ModelSpec("test-pick-en384", "t/en384", 384, 256, factory=HashEncoder.from_spec),
        "de64": ModelSpec("test-pick-de64", "t/de64", 64, 512, factory=HashEncoder.from_spec,
                          languages=("de",)),
        "multi": ModelSpec("test-pick-multi", "t/multi", 96, 512, factory=HashEncoder.from_spec,
                           languages=("multilingual",), matryoshka_dims=(96, 64)),
        "unfetched": ModelSpec("test-pick-unfetched", "pypi:nothing==1", 64, 128,
                               fetch="embedstack.encoders.fetch:NOTHING"),
        "remote": ModelSpec("test-pick-remote", "pypi:remote==1", 64, 128),
        "hub": ModelSpec("test-pick-hub", "example-org/no-such-model", 64, 128),
    }  # fmt: skip
    for spec in names.values():
        register_model(spec, overwrite=True)
    yield {k: v.name for k, v in names.items()}
    for spec in names.values():
        unregister_model(spec.name)


def test_default_grid(fake_models: dict[str, str]) -> None:
    specs, _ = select_models(PickOptions(models=(fake_models["en384"], fake_models["de64"])))
    grid, warnings = build_grid(specs, PickOptions(), n_docs=100)
    ids = [c.id for c in grid]
    en = fake_models["en384"]
    expected_en = [f"{en}|{d}|{p}|{m}" for d in (384, 256, 128) for p in ("float32", "int8")
                   for m in ("dense", "hybrid")]  # fmt: skip
    assert ids[: len(expected_en)] == expected_en
    # a 64-d model: only its full dimension (256 and 128 are larger), nothing below 64
    de = fake_models["de64"]
    assert [i for i in ids if i.startswith(de)] == [
        f"{de}|64|{p}|{m}" for p in ("float32", "int8") for m in ("dense", "hybrid")
    ]
    assert ids[-1] == "bm25" and len(ids) == 12 + 4 + 1
    assert warnings == []


def test_grid_axes_override_and_seed_rules(fake_models: dict[str, str]) -> None:
    name = fake_models["multi"]
    options = PickOptions(models=(name,), dims=("full", "32"), precisions=("binary",),
                          modes=("dense", "colbert"))  # fmt: skip
    specs, _ = select_models(options)
    grid, warnings = build_grid(specs, options, n_docs=500)
    assert [c.id for c in grid] == [f"{name}|96|binary|dense", f"{name}|32|binary|dense"]
    assert any("below 64" in w and "measured" in w for w in warnings)
    assert any("ColBERT refused" in w and "500 passages" in w for w in warnings)
    with pytest.raises(InvalidInput, match="ColBERT refused"):
        build_grid(specs, PickOptions(models=(name,), modes=("colbert",)), n_docs=500)
    # not asked explicitly: no truncation below 64
    grid, _ = build_grid(specs, PickOptions(models=(name,), dims=None), n_docs=500)
    assert all(c.dim is None or c.dim >= 64 for c in grid)


def test_default_models_are_the_local_dense_ones(fake_models: dict[str, str]) -> None:
    names = [s.name for s in select_models(PickOptions())[0]]
    assert fake_models["en384"] in names and fake_models["multi"] in names
    assert fake_models["unfetched"] not in names and fake_models["remote"] not in names
    assert "splade-tiny" not in names  # sparse


def test_languages_filter(fake_models: dict[str, str]) -> None:
    options = PickOptions(models=(fake_models["en384"], fake_models["de64"], fake_models["multi"]),
                          languages=("de",))  # fmt: skip
    specs, warnings = select_models(options)
    assert [s.name for s in specs] == [fake_models["de64"], fake_models["multi"]]
    assert any(fake_models["en384"] in w for w in warnings)
    with pytest.raises(InvalidInput, match="covering fr"):
        select_models(PickOptions(models=(fake_models["de64"],), languages=("fr",)))


def test_unknown_and_unfetched_models(fake_models: dict[str, str]) -> None:
    with pytest.raises(ModelNotFound, match="`embedstack models`"):
        select_models(PickOptions(models=("no-such-model",)))
    name = fake_models["unfetched"]
    with pytest.raises(ModelNotFound, match=f"`embedstack models fetch {name}`"):
        select_models(PickOptions(models=(name,)))
    with pytest.raises(ModelNotFound, match=r"not on this machine: .*`pip install remote==1`"):
        select_models(PickOptions(models=(fake_models["remote"],)))
    with pytest.raises(ModelNotFound, match="not on this machine") as caught:
        select_models(PickOptions(models=(fake_models["hub"],)))
    assert "download example-org/no-such-model once where the Hugging Face hub" in str(caught.value)
    assert f"`embedstack embed --model {fake_models['hub']} hello`" in str(caught.value)
    with pytest.raises(InvalidInput, match="sparse"):
        select_models(PickOptions(models=("splade-tiny",)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modes": ("dnse",)}, "unknown 'dnse'"),
        ({"precisions": ("fp16",)}, "unknown 'fp16'"),
        ({"dims": ("half",)}, "'half'"),
        ({"latency_budget_ms": -1.0}, "--latency-budget-ms"),
        ({"storage_budget_gb": 0.0}, "--storage-budget-gb"),
        ({"corpus_size": 0}, "--corpus-size"),
        ({"models": ()}, "--models is empty"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        PickOptions(**kwargs)


def test_price_file(tmp_path: Path) -> None:
    builtin = load_prices()
    assert builtin.cpu_usd_per_hour > 0 and builtin.storage_usd_per_gb_month > 0
    assert any("aws" in n.lower() for n in builtin.notes)  # sources are stated
    file = tmp_path / "p.json"
    file.write_text('{"cpu_usd_per_hour": 1.0, "storage_usd_per_gb_month": 2.0}')
    prices = load_prices(file)
    assert prices.usd_per_1m_queries(0.0036) == pytest.approx(0.0036 * 1.0 / 3600 * 1e6)
    assert prices.storage_usd_per_month(5e9) == pytest.approx(10.0)
    file.write_text('{"cpu_usd_per_hour": "cheap", "storage_usd_per_gb_month": 2.0}')
    with pytest.raises(InvalidInput, match="cpu_usd_per_hour"):
        load_prices(file)
    with pytest.raises(InvalidInput, match="no such file"):
        load_prices(tmp_path / "missing.json")


# --- budgets and the recommendation ---------------------------------------------------------


def _cand(cid: str, quality: float, p99: float, size: float, model: str | None = "m",
          mode: str = "dense", dim: int | None = 64) -> dict[str, Any]:  # fmt: skip
    return {"id": cid, "model": model, "dim": dim, "full_dim": 64 if model else None,
            "precision": "float32" if model else None, "mode": mode,
            "metrics": {"ndcg@10": quality}, "main_metric": "ndcg@10", "latency_ms_p99": p99,
            "bytes_per_doc": size, "pareto": False, "significance": None}  # fmt: skip


def test_budget_miss_says_which_and_by_how_much() -> None:
    cands = [_cand("a", 0.5, 15.2, 1000), _cand("b", 0.4, 20.0, 500)]
    options = PickOptions(latency_budget_ms=10.0, corpus_size=1_000_000)
    apply_budgets(cands, options)
    assert cands[0]["budget_misses"] == [
        {"budget": "latency_ms", "limit": 10.0, "value": 15.2, "over_by": pytest.approx(5.2)}
    ]
    assert not any(c["within_budgets"] for c in cands)
    assert unmet_budgets(cands, options) == [
        {"budget": "latency_ms", "limit": 10.0, "best_value": 15.2,
         "over_by": pytest.approx(5.2)}
    ]  # fmt: skip


def test_budgets_met_alone_but_not_together() -> None:
    # x meets latency only, y meets storage only (1e6 docs x 2000 B = 2 GB)
    cands = [_cand("x", 0.5, 5.0, 2000), _cand("y", 0.4, 20.0, 500)]
    options = PickOptions(latency_budget_ms=10.0, storage_budget_gb=1.0)
    apply_budgets(cands, options)
    unmet = {u["budget"]: u for u in unmet_budgets(cands, options)}
    assert unmet["latency_ms"]["best_value"] == 20.0 and unmet["latency_ms"]["over_by"] == 10.0
    assert unmet["storage_gb"]["best_value"] == pytest.approx(2.0)
    assert unmet["storage_gb"]["over_by"] == pytest.approx(1.0)
    for c in cands:
        c["pareto"] = True
    per_query = {c["id"]: np.full(30, c["metrics"]["ndcg@10"]) for c in cands}
    significance(cands, per_query, 1000, 0)
    context = {"evaluation": "judged", "n_queries": 30, "n_docs": 100}
    rec = recommend(cands, per_query, {}, options, context)
    assert rec["candidate"] is None and len(rec["unmet_budgets"]) == 2


def test_mark_front_marks_the_front_on_the_main_metric_and_applies_budgets() -> None:
    # on "accuracy" (the main metric here) b is dominated by a; on ndcg@10 it would not be
    cands = [_cand("a", 0.5, 10.0, 100), _cand("b", 0.9, 12.0, 100), _cand("c", 0.4, 5.0, 400)]
    for cand, accuracy in zip(cands, (0.8, 0.7, 0.6), strict=True):
        cand["metrics"]["accuracy"] = accuracy
    options = PickOptions(latency_budget_ms=11.0)
    mark_front(cands, "accuracy", options)
    assert [c["pareto"] for c in cands] == [True, False, True]
    assert [c["within_budgets"] for c in cands] == [True, False, True]
    assert cands[1]["budget_misses"][0]["over_by"] == pytest.approx(12.0 - 11.0)
    mark_front(cands, "ndcg@10", PickOptions())
    assert [c["pareto"] for c in cands] == [True, True, True]
    assert all(c["within_budgets"] and not c["budget_misses"] for c in cands)


def _scored(n: int = 60) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    base = rng.random(n)
    per_query = {
        "top": base,
        "close": base - np.abs(rng.normal(0, 0.02, n)) * (rng.random(n) < 0.1),  # a bit worse
        "weak": base * 0.3,  # much worse, but the smallest
        "off": base * 0.2,  # dominated by weak
    }
    cands = [_cand("top", float(per_query["top"].mean()), 10.0, 1600),
             _cand("close", float(per_query["close"].mean()), 8.0, 400),
             _cand("weak", float(per_query["weak"].mean()), 4.0, 50),
             _cand("off", float(per_query["off"].mean()), 9.0, 900)]  # fmt: skip
    front = pareto_front(
        [c["metrics"]["ndcg@10"] for c in cands],
        [c["latency_ms_p99"] for c in cands],
        [c["bytes_per_doc"] for c in cands],
    )
    for cand, on in zip(cands, front, strict=True):
        cand["pareto"] = on
    return cands, per_query


def test_recommendation_is_the_cheapest_not_significantly_worse_front_candidate() -> None:
    cands, per_query = _scored()
    assert [c["pareto"] for c in cands] == [True, True, True, False]
    options = PickOptions()
    apply_budgets(cands, options)
    best = significance(cands, per_query, 2000, 0)
    assert best["id"] == "top"
    by_id = {c["id"]: c for c in cands}
    assert by_id["weak"]["significance"]["significant"] is True
    assert by_id["close"]["significance"]["significant"] is False
    models = {"m": {"max_length": 256, "matryoshka_dims": [], "query_prefix": "query: ",
                    "document_prefix": "passage: "}}  # fmt: skip
    context = {"evaluation": "judged", "n_queries": 60, "n_docs": 100,
               "share_over": {"m": 0.4}, "warnings": []}  # fmt: skip
    rec = recommend(cands, per_query, models, options, context)
    assert rec["candidate"] == "close"
    chosen = by_id[rec["candidate"]]
    assert chosen["pareto"] and chosen["within_budgets"]
    assert "not significantly worse" in rec["model"]["reason"]
    assert rec["prefix"]["query_prefix"] == "query: "
    assert any("long documents" in w and "40%" in w for w in rec["warnings"])
    assert rec["evaluation_plan"] and rec["dimension"]["dim"] == 64
    # a loss above MAX_LOSS is not traded away even when too few queries make it significant
    few = {k: v[:4] for k, v in per_query.items()}
    few["close"] = few["top"] - 0.05
    for cid in ("top", "close"):
        by_id[cid]["metrics"]["ndcg@10"] = float(few[cid].mean())
    assert paired_randomization(few["top"], few["close"])[1] > 0.05
    assert recommend(cands, few, models, options, context)["candidate"] == "top"
    for cid in ("top", "close"):
        by_id[cid]["metrics"]["ndcg@10"] = float(per_query[cid].mean())
    # a latency budget that only "weak" meets: it is recommended, though worse
    options = PickOptions(latency_budget_ms=5.0)
    apply_budgets(cands, options)
    assert recommend(cands, per_query, models, options, context)["candidate"] == "weak"


def test_progress_lines_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from embedstack.eval.pick import progress

    monkeypatch.delenv("EMBEDSTACK_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    monkeypatch.setattr(progress, "progress_enabled", lambda show: False)  # not a terminal
    steps = progress.Steps(None)
    assert steps.mode == "plain"
    with caplog.at_level(logging.INFO, logger="embedstack.pick"):
        with steps.task("encoding", 4) as advance:
            advance(2)
            advance(2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "encoding: 0/4" and "2/4" in lines[1] and "left" in lines[1]
    assert lines[-1].startswith("encoding: 4/4 done")
    assert progress.Steps(False).mode == "off"
    monkeypatch.setenv("EMBEDSTACK_NO_PROGRESS", "1")
    assert progress.Steps(True).mode == "off"
