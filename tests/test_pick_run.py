"""`embedstack pick` end to end on tiny generated data with hashing encoders (tier 0):
pick.json against the contract, proxy mode, the time budget, errors and the CLI."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embedstack import HashEncoder, ModelSpec, register_model, unregister_model
from embedstack.cli import run
from embedstack.errors import InvalidInput
from embedstack.eval.pick import PickOptions, load_pick_data, run_pick

WORDS = ("cat dog mouse house rain sun stock market rate fear warm mat sleep purr bark tree "
         "river car road city night bread cheese apple ocean wave sand").split()  # fmt: skip


def _sentence(rng: Any, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


@pytest.fixture()
def beir(tmp_path: Path) -> Path:
    import random

    rng = random.Random(0)
    root = tmp_path / "tinybeir"
    (root / "qrels").mkdir(parents=True)
    docs = {f"d{i}": " ".join(_sentence(rng) for _ in range(3)) for i in range(80)}
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, text in docs.items():
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f, (root / "qrels" / "test.tsv").open("w") as q:
        q.write("query-id\tcorpus-id\tscore\n")
        for j in range(24):
            doc = f"d{j * 3}"
            f.write(json.dumps({"_id": f"q{j}", "text": " ".join(docs[doc].split()[2:7])}) + "\n")
            q.write(f"q{j}\t{doc}\t1\n")
    return root


@pytest.fixture()
def hash_models() -> Iterator[tuple[str, str]]:
    specs = (
        ModelSpec("test-pick-h64", "t/h64", 64, 512, factory=HashEncoder.from_spec),
        ModelSpec("test-pick-h128", "t/h128", 128, 32, factory=HashEncoder.from_spec,
                  query_prefix="q: ", matryoshka_dims=(128, 64)),
    )  # fmt: skip
    for spec in specs:
        register_model(spec, overwrite=True)
    yield specs[0].name, specs[1].name
    for spec in specs:
        unregister_model(spec.name)


def _options(tmp_path: Path, models: tuple[str, ...], **kwargs: Any) -> PickOptions:
    return PickOptions(models=models, cache_dir=tmp_path / "cache", n_permutations=1000,
                       show_progress=False, **kwargs)  # fmt: skip


def _no_nan(value: str) -> float:
    raise AssertionError(f"{value} in pick.json")


# the keys of /work/notes/pick_schema.md, level by level
TOP = {"kind", "format_version", "created", "command", "elapsed_s", "task", "data", "budgets",
       "prices", "models", "candidates", "recommendation"}  # fmt: skip
DATA = {"path", "name", "evaluation", "proxy_note", "n_docs", "n_queries", "queries_subsampled",
        "subsample_note", "mean_doc_tokens", "share_docs_over_512_tokens"}  # fmt: skip
MODEL = {"name", "model_id", "full_dim", "max_length", "languages", "license", "matryoshka_dims",
         "encode_docs_per_s", "encode_s", "query_prefix", "document_prefix"}  # fmt: skip
CAND = {"id", "model", "dim", "full_dim", "precision", "mode", "metrics", "main_metric",
        "latency_ms_p50", "latency_ms_p99", "encode_docs_per_s", "bytes_per_doc", "cost",
        "significance", "pareto", "within_budgets", "budget_misses"}  # fmt: skip
REC = {"candidate", "model", "dimension", "mode", "prefix", "evaluation_plan", "warnings",
       "unmet_budgets"}  # fmt: skip


def test_pick_json_follows_the_contract(
    tmp_path: Path, beir: Path, hash_models: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "embedstack.eval.report", None)  # no report module: json only
    out = tmp_path / "out"
    options = _options(tmp_path, hash_models, dims=("full", "64"))
    result = run_pick(beir, out, options, command="embedstack pick x")
    saved = json.loads((out / "pick.json").read_text(), parse_constant=_no_nan)
    assert saved == json.loads(json.dumps(result))
    assert sorted(p.name for p in out.iterdir()) == ["pick.json"]  # BM25 work folder removed
    assert TOP <= saved.keys() and saved["kind"] == "embedstack.pick"
    assert saved["format_version"] == 1 and saved["task"] == "retrieval"
    assert DATA <= saved["data"].keys() and saved["data"]["evaluation"] == "judged"
    assert saved["data"]["n_docs"] == 80 and saved["data"]["n_queries"] == 24
    assert set(saved["budgets"]) >= {"latency_ms", "storage_gb", "corpus_size", "time_budget_min"}
    prices = saved["prices"]
    assert {"source_file", "cpu_usd_per_hour", "storage_usd_per_gb_month", "api", "notes"} <= set(
        prices
    )
    assert [a["usd_per_1m_tokens"] for a in prices["api"]] == [0.02, 0.13]
    assert all(a["source"] for a in prices["api"])
    assert [m["name"] for m in saved["models"]] == list(hash_models)
    for model in saved["models"]:
        assert MODEL <= model.keys() and model["encode_docs_per_s"] > 0
    ids = [c["id"] for c in saved["candidates"]]
    h64, h128 = hash_models
    # h64: 64 only (its full dimension); h128: 128 and 64; x 2 precisions x 2 modes
    assert len(ids) == 4 + 8 + 1 and ids[-1] == "bm25" and f"{h128}|64|int8|hybrid" in ids
    for cand in saved["candidates"]:
        assert CAND <= cand.keys()
        assert set(cand["metrics"]) == {"ndcg@10", "recall@100", "mrr@10"}
        assert 0 <= cand["metrics"]["ndcg@10"] <= 1
        assert cand["latency_ms_p99"] >= cand["latency_ms_p50"] > 0
        assert cand["cost"]["usd_per_1m_queries"] > 0 and cand["cost"]["storage_usd_per_month"] > 0
        sig = cand["significance"]
        assert {"baseline", "delta", "p_value", "significant", "test"} <= sig.keys()
        assert "randomization" in sig["test"]
    by_id = {c["id"]: c for c in saved["candidates"]}
    # bytes per document: 64 float32 = 256 B; int8 = 64 B + the calibration ranges; hybrid adds
    # the same BM25 postings as bm25 alone
    assert by_id[f"{h64}|64|float32|dense"]["bytes_per_doc"] == 256
    assert by_id[f"{h64}|64|int8|dense"]["bytes_per_doc"] == pytest.approx(64 + 2 * 64 * 4 / 80)
    assert by_id[f"{h64}|64|float32|hybrid"]["bytes_per_doc"] == pytest.approx(
        256 + by_id["bm25"]["bytes_per_doc"]
    )
    rec = saved["recommendation"]
    assert REC <= rec.keys()
    chosen = by_id[rec["candidate"]]
    assert chosen["pareto"] and chosen["within_budgets"]
    best = max(saved["candidates"], key=lambda c: c["metrics"]["ndcg@10"])
    assert best["significance"]["p_value"] is None  # the baseline itself
    # h128 reads only 32 tokens: the documents (~30 tokens) sit near its limit
    assert saved["models"][1]["max_length"] == 32


def test_report_is_rendered_when_available(
    tmp_path: Path, beir: Path, hash_models: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    calls: list[dict[str, Any]] = []

    def render_pick(pick: dict[str, Any], out_dir: Path) -> list[Path]:
        calls.append(pick)
        (out_dir / "report.md").write_text("# report\n")
        return [out_dir / "report.md"]

    fake = types.ModuleType("embedstack.eval.report")
    fake.render_pick = render_pick  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "embedstack.eval.report", fake)
    run_pick(beir, tmp_path / "out", _options(tmp_path, hash_models[:1], modes=("dense",)))
    assert len(calls) == 1 and calls[0]["kind"] == "embedstack.pick"
    assert (tmp_path / "out" / "report.md").is_file()


def test_missing_report_extra_keeps_pick_json(
    tmp_path: Path, beir: Path, hash_models: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    from embedstack.errors import MissingDependency

    def render_pick(pick: dict[str, Any], out_dir: Path) -> list[Path]:
        raise MissingDependency("matplotlib", "report", "plots")

    fake = types.ModuleType("embedstack.eval.report")
    fake.render_pick = render_pick  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "embedstack.eval.report", fake)
    run_pick(beir, tmp_path / "out", _options(tmp_path, hash_models[:1], modes=("dense",)))
    assert (tmp_path / "out" / "pick.json").is_file()


def test_budget_nothing_meets(tmp_path: Path, beir: Path, hash_models: tuple[str, str]) -> None:
    options = _options(tmp_path, hash_models[:1], latency_budget_ms=1e-6)
    result = run_pick(beir, tmp_path / "out", options)
    rec = result["recommendation"]
    assert rec["candidate"] is None
    [miss] = rec["unmet_budgets"]
    fastest = min(c["latency_ms_p99"] for c in result["candidates"])
    assert miss == {"budget": "latency_ms", "limit": 1e-6, "best_value": fastest,
                    "over_by": pytest.approx(fastest - 1e-6)}  # fmt: skip
    assert all(not c["within_budgets"] for c in result["candidates"])


def test_time_budget_subsamples_queries(
    tmp_path: Path, beir: Path, hash_models: tuple[str, str]
) -> None:
    # the corpus vectors are cached first: a model whose vectors are cached fits any budget
    # (see test_pick_plan.py for models that must be encoded)
    run_pick(beir, tmp_path / "warm", _options(tmp_path, hash_models[:1], modes=("dense",)))
    options = _options(tmp_path, hash_models[:1], modes=("dense",), time_budget_min=1e-4)
    data = run_pick(beir, tmp_path / "out", options)["data"]
    assert data["queries_subsampled"] is True and data["n_queries"] == 10
    assert "10 of 24 queries" in data["subsample_note"] and "seed 0" in data["subsample_note"]


def _text_corpus(root: Path) -> Path:
    import random

    rng = random.Random(3)
    root.mkdir()
    for i in range(30):
        body = " ".join(_sentence(rng, 7) for _ in range(4))
        (root / f"note{i}.md").write_text(f"# Note {i} {rng.choice(WORDS)}\n\n{body}\n")
    return root


def test_proxy_mode_is_labelled_and_removes_the_query(
    tmp_path: Path, hash_models: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _text_corpus(tmp_path / "notes")
    data = load_pick_data(corpus, seed=0)
    assert data.evaluation == "proxy" and "proxy" in (data.proxy_note or "")
    assert len(data.queries) == 30
    for qid, query in data.queries.items():
        [doc_id] = data.qrels[qid]
        assert qid == f"proxy:{doc_id}" and len(query.split()) >= 4
        assert query not in data.doc_texts[data.doc_ids.index(doc_id)]
    result = run_pick(corpus, tmp_path / "out", _options(tmp_path, hash_models[:1]))
    assert result["data"]["evaluation"] == "proxy"
    assert result["data"]["proxy_note"] == data.proxy_note
    assert any("proxy numbers" in step for step in result["recommendation"]["evaluation_plan"])
    code = run(["pick", str(corpus), "--out", str(tmp_path / "cli"), "--models", hash_models[0],
                "--modes", "dense"])  # fmt: skip
    assert code == 0
    assert "PROXY" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["jsonl", "folder", "beir"])
def test_empty_corpus_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "empty"
    if kind == "jsonl":
        path = tmp_path / "empty.jsonl"
        path.write_text("")
    elif kind == "folder":
        path.mkdir()
    else:
        (path / "qrels").mkdir(parents=True)
        (path / "corpus.jsonl").write_text("")
        (path / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
        (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td\t1\n")
    with pytest.raises(InvalidInput, match="empty"):
        load_pick_data(path)


def test_cli_errors(
    tmp_path: Path, beir: Path, hash_models: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    assert run(["pick", str(beir), "--out", out, "--modes", "dnse"]) == 2
    assert "unknown 'dnse'" in capsys.readouterr().err
    assert run(["pick", str(beir), "--out", out, "--modle", "x"]) == 2
    assert "--modle" in capsys.readouterr().err
    assert run(["pick", str(beir), "--out", out, "--models", "nope-model"]) == 3
    assert "`embedstack models`" in capsys.readouterr().err
    register_model(ModelSpec("test-pick-later", "pypi:later==1", 64, 128, fetch="x:Y"))
    try:
        assert run(["pick", str(beir), "--out", out, "--models", "test-pick-later"]) == 3
    finally:
        unregister_model("test-pick-later")
    assert "`embedstack models fetch test-pick-later`" in capsys.readouterr().err
    assert run(["pick", str(tmp_path / "missing"), "--out", out]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert run(["pick", str(empty), "--out", out, "--models", hash_models[0]]) == 2
    assert "corpus is empty" in capsys.readouterr().err
    code = run(["pick", str(beir), "--out", out, "--models", hash_models[0],
                "--latency-budget-ms", "0.000001"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0 and "no candidate meets the budgets: latency_ms" in captured.out
    assert "over by" in captured.out and "Traceback" not in captured.err


def test_no_nan_anywhere(tmp_path: Path, beir: Path, hash_models: tuple[str, str]) -> None:
    result = run_pick(beir, tmp_path / "out", _options(tmp_path, hash_models[:1]))

    def walk(value: Any) -> None:
        if isinstance(value, float):
            assert math.isfinite(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(result)


def test_beir_folder_without_judgements_is_a_proxy(tmp_path: Path, beir: Path) -> None:
    import shutil

    assert load_pick_data(beir).evaluation == "judged"
    with pytest.raises(InvalidInput, match="available splits: test"):
        load_pick_data(beir, split="dev")
    shutil.rmtree(beir / "qrels")
    data = load_pick_data(beir)
    assert data.evaluation == "proxy" and len(data.doc_ids) == 80
    assert all(q.startswith("proxy:") for q in data.queries)


def test_corpus_vectors_are_reused(
    tmp_path: Path, beir: Path, hash_models: tuple[str, str]
) -> None:
    from embedstack.encoders import load_encoder
    from embedstack.eval import load_beir
    from embedstack.eval.index_runner import cached_corpus_embeddings
    from embedstack.eval.pick.measure import slug

    name = hash_models[0]
    options = _options(tmp_path, (name,), modes=("dense",))
    # vectors `embedstack eval` cached for this dataset and model (its folder layout)
    dataset = load_beir(beir)
    folder = tmp_path / "cache" / slug(f"{dataset.name}-{name}")
    cached_corpus_embeddings(load_encoder(name), dataset, folder)
    first = run_pick(beir, tmp_path / "a", options)["models"][0]["encode_timing"]
    assert "from cache" in first
    assert not (tmp_path / "cache" / "pick").exists()  # nothing encoded, nothing written
    # a proxy corpus: encoded once, then from pick's own cache
    corpus = _text_corpus(tmp_path / "notes")
    timings = [run_pick(corpus, tmp_path / o, options)["models"][0]["encode_timing"]
               for o in ("b", "c")]  # fmt: skip
    assert timings[0].startswith("full corpus") and "from cache" in timings[1]


def test_cli_cache_dir_keeps_vectors_there(
    tmp_path: Path, beir: Path, hash_models: tuple[str, str]
) -> None:
    cache = tmp_path / "vectors"
    args = ["pick", str(beir), "--models", hash_models[0], "--modes", "dense",
            "--cache-dir", str(cache)]  # fmt: skip
    assert run([*args, "--out", str(tmp_path / "a")]) == 0
    assert any(cache.rglob("embeddings.npy"))  # encoded into the folder given
    assert run([*args, "--out", str(tmp_path / "b")]) == 0
    second = json.loads((tmp_path / "b" / "pick.json").read_text())
    assert "from cache" in second["models"][0]["encode_timing"]
    assert "--cache-dir" in second["command"]
