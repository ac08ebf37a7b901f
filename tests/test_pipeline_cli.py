"""CLI: `embedstack search --pipeline` and `embedstack eval --pipeline`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from embedstack.cli import run
from embedstack.index import Index
from embedstack.pipeline import Pipeline, save_pipeline
from test_index_helpers import SMALL_CHUNKS, corpus

QUERY = "protein gene therapy"


class Reverse:
    name = "reverse"

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return np.arange(len(documents), dtype=np.float32)


@pytest.fixture()
def fake_reranker(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`--reranker fake` loads the Reverse reranker; records the names asked for."""
    asked: list[str] = []

    def load(value: str, options: dict[str, object]) -> Reverse:
        asked.append(value)
        return Reverse()

    monkeypatch.setattr("embedstack.pipeline.run._load_reranker", load)
    return asked


@pytest.fixture()
def index_dir(tmp_path: Path, hash_model: str) -> Path:
    path = tmp_path / "idx"
    with Index.create(path, encoder=hash_model, chunking=SMALL_CHUNKS) as index:
        index.add(corpus(40))
    return path


def _search(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert run(["search", *args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_search_pipeline_preset_equals_mode(
    index_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_mode = _search(capsys, str(index_dir), QUERY, "--mode", "hybrid", "-k", "7")
    by_pipeline = _search(capsys, str(index_dir), QUERY, "--pipeline", "hybrid", "-k", "7")
    assert [r["id"] for r in by_pipeline] == [r["id"] for r in by_mode] and len(by_mode) == 7
    assert by_pipeline[0]["ranks"].keys() == {"bm25", "dense", "rrf"}  # type: ignore[attr-defined]


def test_pipeline_search_turns_ort_spinning_off_unless_asked(
    index_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models taking turns on the cores must not spin while waiting (unless the user says)."""
    monkeypatch.setenv("EMBEDSTACK_ORT_SPINNING", "placeholder")  # restored after the test
    monkeypatch.delenv("EMBEDSTACK_ORT_SPINNING")
    _search(capsys, str(index_dir), QUERY, "--mode", "bm25")
    assert "EMBEDSTACK_ORT_SPINNING" not in os.environ
    _search(capsys, str(index_dir), QUERY, "--pipeline", "hybrid")
    assert os.environ["EMBEDSTACK_ORT_SPINNING"] == "0"
    monkeypatch.setenv("EMBEDSTACK_ORT_SPINNING", "1")
    _search(capsys, str(index_dir), QUERY, "--pipeline", "hybrid")
    assert os.environ["EMBEDSTACK_ORT_SPINNING"] == "1"


def test_search_pipeline_file_saved_name_and_string(
    index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = "bm25(top=20) -> dense_rescore(top=10) -> top 4"
    file = tmp_path / "p.json"
    cfg = {"generators": [{"kind": "bm25", "top": 20}], "k": 4,
           "stages": [{"kind": "dense_rescore", "top": 10}]}  # fmt: skip
    file.write_text(json.dumps(cfg))
    save_pipeline(index_dir, "saved", spec)
    rows = [
        _search(capsys, str(index_dir), QUERY, "--pipeline", p) for p in (spec, str(file), "saved")
    ]
    assert rows[0] == rows[1] == rows[2] and len(rows[0]) == 4
    with Index.open(index_dir, readonly=True) as index:
        expected = Pipeline(spec, index=index).run(index, QUERY, 4)
    assert [r["id"] for r in rows[0]] == [h.doc_id for h in expected]
    table = run(["search", str(index_dir), QUERY, "--pipeline", "saved"])
    assert table == 0 and "pipeline saved" in capsys.readouterr().out


def test_search_rerank_preset_without_reranker_fails_with_hint(
    index_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["search", str(index_dir), QUERY, "--pipeline", "three-stage"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "embedstack train reranker DATASET_DIR --split train --out DIR" in err
    assert run(["search", str(index_dir), QUERY, "--reranker", "x"]) == 2
    assert "--reranker needs --pipeline" in capsys.readouterr().err
    assert run(["search", str(index_dir), QUERY, "--pipeline", "bm25 -> rerank(top=500)"]) == 2
    assert "stages.0.top" in capsys.readouterr().err


def test_search_with_reranker(
    index_dir: Path, fake_reranker: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = (str(index_dir), QUERY, "--pipeline", "three-stage", "--reranker", "fake")
    rows = _search(capsys, *args, "-k", "5")
    assert fake_reranker == ["fake"]
    with Index.open(index_dir, readonly=True) as index:
        spec = "bm25(top=100) -> dense_rescore(top=100)"
        dense_order = Pipeline(spec, index=index).run(index, QUERY, 20)
    assert [r["id"] for r in rows] == [h.doc_id for h in dense_order][::-1][:5]


def _beir(tmp_path: Path) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = corpus(30)
    with (root / "corpus.jsonl").open("w") as f:
        for d in docs:
            f.write(json.dumps({"_id": d["id"], "title": d["title"], "text": d["text"]}) + "\n")
    queries = {"q1": "protein gene therapy", "q2": "brain neuron memory", "q3": "insulin diet"}
    with (root / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td5\t1\nq3\td7\t1\nq3\td8\t1\n"
    )
    return root


def test_eval_pipeline_json_contract(tmp_path: Path, hash_model: str) -> None:
    data = _beir(tmp_path)
    common = ["eval", str(data), "--model", hash_model, "--index", str(tmp_path / "ix")]
    assert run([*common, "--retriever", "hybrid", "--json", str(tmp_path / "h.json")]) == 0
    assert run([*common, "--pipeline", "hybrid", "--json", str(tmp_path / "p.json")]) == 0
    by_mode = json.loads((tmp_path / "h.json").read_text())
    report = json.loads((tmp_path / "p.json").read_text())
    for key in ("ndcg@10", "recall@100", "mrr@10", "map@100", "n_queries", "latency_ms_p50",
                "latency_ms_p99", "index_bytes", "config"):  # fmt: skip
        assert key in report
    for key in ("ndcg@10", "recall@100", "mrr@10", "map@100", "n_queries"):
        assert report[key] == pytest.approx(by_mode[key]), key
    assert list(report["stage_latency"]) == ["bm25", "dense", "rrf", "total"]
    assert report["stage_latency"]["rrf"]["latency_ms_p99"] >= 0
    cfg = report["config"]
    assert cfg["retriever"] == "pipeline" and cfg["pipeline"] == "hybrid"
    assert cfg["pipeline_string"] == "bm25(top=100) + dense(top=100) -> rrf(k=60) -> top 10"
    assert cfg["model"] == hash_model


def test_eval_rerank_pipeline(
    tmp_path: Path, hash_model: str, fake_reranker: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = _beir(tmp_path)
    common = ["eval", str(data), "--model", hash_model, "--index", str(tmp_path / "ix")]
    assert run([*common, "--pipeline", "three-stage"]) == 2
    assert "embedstack train reranker" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert (
        run([*common, "--pipeline", "three-stage", "--reranker", "fake", "--json", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    assert list(report["stage_latency"]) == ["bm25", "dense_rescore", "rerank", "total"]
    assert report["config"]["models"] == {"rerank": "reverse"}
    assert report["n_queries"] == 3


def test_eval_colbert_pipeline_on_stored_vectors(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_splade_helpers import build_tiny_bert

    data = _beir(tmp_path)
    folder = build_tiny_bert(tmp_path / "colbert", linear_dim=12)
    common = ["eval", str(data), "--model", hash_model, "--pipeline", "hybrid-colbert"]
    assert run([*common, "--index", str(tmp_path / "plain")]) == 2
    assert "stores no ColBERT vectors" in capsys.readouterr().err
    assert run(["eval", str(data), "--model", hash_model, "--colbert", str(folder)]) == 2
    assert "--colbert needs --pipeline" in capsys.readouterr().err
    out = tmp_path / "c.json"
    ix = tmp_path / "cix"
    assert run([*common, "--colbert", str(folder), "--index", str(ix), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert sorted(report["stage_latency"]) == ["bm25", "colbert", "dense", "rrf", "total"]
    assert report["config"]["models"] == {"colbert": "colbert:index"}
    assert report["config"]["colbert"] == Index.open(ix, readonly=True).colbert_model
    assert report["config"]["colbert"].startswith(str(folder) + "@")
