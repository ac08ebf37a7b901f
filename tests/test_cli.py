"""CLI behaviour: outputs, JSON contract, and one-line errors with non-zero exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedstack.cli import run


def _beir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs = {
        "d1": "cats purr and sleep on warm mats",
        "d2": "stock markets fell on interest rate fears",
        "d3": "the cat chased a mouse around the house",
        "d4": "rain is expected over the weekend",
    }
    with (root / "corpus.jsonl").open("w") as f:
        for i, t in docs.items():
            f.write(json.dumps({"_id": i, "title": "", "text": t}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        f.write(json.dumps({"_id": "q1", "text": "cat mouse"}) + "\n")
        f.write(json.dumps({"_id": "q2", "text": "markets interest rate"}) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td2\t1\n", encoding="utf-8"
    )
    return root


def test_eval_json_contract(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    code = run(
        ["eval", str(_beir(tmp_path)), "--model", hash_model, "--mode", "dense", "--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    for key in (
        "ndcg@10",
        "recall@100",
        "mrr@10",
        "map@100",
        "n_queries",
        "latency_ms_p50",
        "latency_ms_p99",
        "index_bytes",
        "config",
    ):
        assert key in report
    assert report["n_queries"] == 2
    assert report["mrr@10"] == 1.0  # hashing puts the word-overlap document first
    assert report["config"]["model"] == hash_model
    assert report["index_bytes"] == 4 * 64 * 4


def test_eval_binary_precision_and_dim(tmp_path: Path, hash_model: str) -> None:
    out = tmp_path / "r.json"
    args = ["eval", str(_beir(tmp_path)), "--model", hash_model, "--mode", "dense", "--dim", "32"]
    assert run([*args, "--precision", "binary", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["dim"] == 32 and report["config"]["precision"] == "binary"


def test_eval_sts(tmp_path: Path, hash_model: str) -> None:
    sts = tmp_path / "sts.csv"
    rows = [
        ("5.0", "a cat sits on the mat", "a cat sits on the mat"),
        ("2.5", "a cat sits on the mat", "a cat sleeps"),
        ("0.0", "a cat sits on the mat", "markets fell sharply"),
    ]
    sts.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(rows)))
    out = tmp_path / "sts.json"
    assert run(["eval-sts", str(sts), "--model", hash_model, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["spearman"] == pytest.approx(1.0)


def test_embed_and_similarity(hash_model: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["embed", "hello world", "second", "--model", hash_model, "--dim", "16"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["index"] for x in lines] == [0, 1] and len(lines[0]["embedding"]) == 16
    assert run(["similarity", "red apple", "red apple", "--model", hash_model]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(1.0, abs=1e-4)


def test_models_lists_default_as_available(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["models", "--json"]) == 0
    rows = {json.loads(x)["name"]: json.loads(x) for x in capsys.readouterr().out.splitlines()}
    assert rows["all-MiniLM-L6-v2"]["available"] is True
    assert rows["bge-small-en-v1.5"]["query_prefix"].startswith("Represent")
    for row in rows.values():  # a fetched model is available exactly when its folder is here
        if row["fetch"] and row["source"].startswith("pypi:"):
            assert row["available"] is (row["size_bytes"] is not None), row


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["embed", "  ", "--model", "HASH"], 2, "empty"),
        (["embed", "x", "--model", "HASH", "--dim", "999"], 2, "--dim"),
        (["embed", "x", "--model", "HASH", "--precision", "fp8"], 2, "precision"),
        (["eval", "/no/such/dir", "--model", "HASH"], 2, "/no/such/dir"),
        (["similarity", "a", "b", "--model", "HASH", "--metric", "jaccard"], 2, "metric"),
        (["embed", "x", "--model", "no-such-model"], 3, "not found"),
    ],
)
def test_errors_are_one_line(
    args: list[str], code: int, needle: str, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [hash_model if a == "HASH" else a for a in args]
    assert run(args) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_distill_checks_its_source_before_announcing_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "static"
    assert run(["models", "distill", "all-MiniLM-L6-v3", "--out", str(out)]) == 3  # a typo
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and len(err.splitlines()) == 1
    assert "distilling" not in err and not out.exists()
    # a model2vec folder onto a taken --out: refused before the "converting" line too
    saved = tmp_path / "m2v"
    saved.mkdir()
    (saved / "config.json").write_text(json.dumps({"model_type": "model2vec"}))
    out.mkdir()
    assert run(["models", "distill", str(saved), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "already exists" in err and len(err.splitlines()) == 1
    assert "converting" not in err and list(out.iterdir()) == []


def test_console_script_exit_code_and_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from embedstack.cli import main; main()", "embed", ""],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")


@pytest.mark.parametrize(
    "args", [["eval"], ["embed"], ["search", "x"], ["nope"], ["embed", "--bogus", "x"]]
)
def test_usage_errors_exit_2_without_traceback(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("Missing" in err or "No such" in err)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    assert "eval" in capsys.readouterr().out


def test_demo_indexes_markdown_sections(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "project"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text(
        "# Tool\nintro text\n## Install\nrun make test to install\n```\n# not a heading\n```\n",
        encoding="utf-8",
    )
    (root / "docs" / "bm25.md").write_text("# BM25\nk1 and b parameters\n", encoding="utf-8")
    code = run(["demo", "--root", str(root), "--model", hash_model, "--index", str(tmp_path / "i")])
    shown = capsys.readouterr().out
    assert code == 0
    assert "Indexed 3 sections of 2 Markdown files" in shown
    from embedstack.cli.demo import _sections

    sections = list(_sections(root / "README.md", root))
    assert [s["title"] for s in sections] == ["README.md › Tool", "README.md › Install"]
    assert sections[1]["text"] == "run make test to install\n```\n# not a heading\n```"


def test_demo_without_docs_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["demo", "--root", str(tmp_path), "--index", str(tmp_path / "i")])
    assert code == 2
    assert "has no README.md or docs/" in capsys.readouterr().err


# --- issue 15: what a new user hit ------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from embedstack import __version__

    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"embedstack {__version__}"


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 success; 2 a user error" in shown


def test_models_names_are_whole_in_80_columns() -> None:
    from embedstack.encoders import list_models

    proc = subprocess.run(
        [sys.executable, "-c", "from embedstack.cli import main; main()", "models"],
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "COLUMNS": "80"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    words = {word for line in lines for word in line.split()}
    assert all(spec.name in words for spec in list_models())


def _count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from embedstack.encoders.hashing import HashEncoder

    calls: list[int] = []
    original = HashEncoder.encode_documents

    def counting(self: HashEncoder, texts: object) -> object:
        texts = list(texts)  # type: ignore[call-overload]
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(HashEncoder, "encode_documents", counting)
    return calls


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_eval_caches_the_corpus_work_for_every_mode(
    tmp_path: Path, hash_model: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A second run on the same corpus and model encodes no document (dense and hybrid)."""
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    data = _beir(tmp_path)
    calls = _count_encodes(monkeypatch)
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    args = ["eval", str(data), "--model", hash_model, "--mode", mode]
    assert run([*args, "--json", str(first)]) == 0
    assert sum(calls) == 4
    assert run([*args, "--json", str(second)]) == 0
    assert sum(calls) == 4  # nothing re-encoded
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["ndcg@10"] == b["ndcg@10"] and a["config"]["retriever"] == mode
    # another corpus (the file changes) is encoded again, not served stale vectors
    with (data / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "d5", "title": "", "text": "a fifth document"}) + "\n")
    assert run([*args, "--json", str(second)]) == 0
    assert sum(calls) == 4 + 5


def test_eval_default_mode_is_hybrid_and_retriever_is_an_alias(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack.index.protocols import DEFAULT_MODE

    data = _beir(tmp_path)
    out = tmp_path / "r.json"
    assert run(["eval", str(data), "--model", hash_model, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["retriever"] == DEFAULT_MODE == "hybrid"
    by_mode, by_alias = tmp_path / "m.json", tmp_path / "a.json"
    assert run(["eval", str(data), "--model", hash_model, "--mode", "bm25", "--json",
                str(by_mode)]) == 0  # fmt: skip
    capsys.readouterr()
    assert run(["eval", str(data), "--model", hash_model, "--retriever", "bm25", "--json",
                str(by_alias)]) == 0  # fmt: skip
    assert "--retriever is deprecated: use --mode" in capsys.readouterr().err
    m, a = json.loads(by_mode.read_text()), json.loads(by_alias.read_text())
    assert m["config"]["retriever"] == a["config"]["retriever"] == "bm25"
    assert m["ndcg@10"] == a["ndcg@10"]
    assert run(["eval", "--help"]) == 0
    assert "--retriever" not in capsys.readouterr().out  # hidden


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--pipeline", "three-stage", "--reranker", "./missing"], "./missing"),
        (["--pipeline", "hybrid-colbert", "--colbert", "./nope"], "./nope"),
        (["--pipeline", "nonsense-preset"], "unknown pipeline"),
        (["--pipeline", "hybrid-colbert"], "stores no ColBERT vectors: pass --colbert"),
        (["--mode", "hybrid", "--fusion", "max"], "fusion"),
        (["--mode", "hybrid", "--alpha", "2"], "alpha"),
        (["--backend", "tpu"], "backend"),
    ],
)
def test_eval_checks_every_argument_before_any_work(
    tmp_path: Path,
    hash_model: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    calls = _count_encodes(monkeypatch)
    ix = tmp_path / "ix"
    code = run(["eval", str(_beir(tmp_path)), "--model", hash_model, "--index", str(ix), *extra])
    err = capsys.readouterr().err.strip()
    assert code in (2, 3) and err.startswith("error:") and needle in err
    assert calls == [] and not ix.exists() and not (tmp_path / "cache").exists()
