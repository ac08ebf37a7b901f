"""CLI for the index: create / add / search / delete / stats / check, and bad input.

Malformed JSONL: without ``--skip-invalid`` the whole command is refused and the index is
left unchanged; with it, the valid documents are added and each bad line is reported with
its file and line number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedstack.cli import run
from embedstack.index import Index


def _index(tmp_path: Path, hash_model: str) -> Path:
    path = tmp_path / "idx"
    assert run(["index", "create", str(path), "--model", hash_model]) == 0
    return path


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = [
    json.dumps({"id": "a", "text": "cats purr on warm mats", "metadata": {"year": 2021}}),
    json.dumps({"id": "b", "text": "stock markets fell on rate fears", "metadata": {"year": 2019}}),
]


def test_add_search_delete_round_trip(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "c.md").write_text("# Kittens\nkittens chase the cat around", encoding="utf-8")
    docs = _jsonl(tmp_path / "docs.jsonl", GOOD)
    assert run(["index", "add", str(path), str(docs), str(notes)]) == 0
    assert "3 added" in capsys.readouterr().out
    assert run(["index", "add", str(path), str(docs)]) == 0  # same content: nothing re-embedded
    assert "0 added, 0 updated, 2 unchanged" in capsys.readouterr().out
    code = run(["search", str(path), "cats purr", "--mode", "bm25", "-k", "2", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and rows[0]["id"] == "a" and rows[0]["rank"] == 1
    run(["search", str(path), "cats", "--mode", "bm25", "--filter", "year>=2020", "--json"])
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == ["a"]
    assert run(["index", "delete", str(path), "a"]) == 0
    assert run(["index", "check", str(path)]) == 0
    capsys.readouterr()
    assert run(["index", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_docs"] == 2


def test_malformed_jsonl_refuses_the_whole_command(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    bad = _jsonl(tmp_path / "bad.jsonl", [GOOD[0], "{not json", json.dumps({"id": "x"}), GOOD[1]])
    capsys.readouterr()
    assert run(["index", "add", str(path), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing was added" in err
    assert "bad.jsonl:2" in err and "bad.jsonl:3" in err and "--skip-invalid" in err
    with Index.open(path) as idx:
        assert len(idx) == 0


def test_skip_invalid_keeps_valid_lines_and_reports_the_rest(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    bad = _jsonl(tmp_path / "bad.jsonl", [GOOD[0], "{not json", GOOD[1]])
    capsys.readouterr()
    assert run(["index", "add", str(path), str(bad), "--skip-invalid"]) == 0
    captured = capsys.readouterr()
    assert "bad.jsonl:2" in captured.err and "2 added" in captured.out
    with Index.open(path) as idx:
        assert sorted(idx.get(i)["id"] for i in ("a", "b")) == ["a", "b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "delete", "{idx}", "nope"], "nope"),
        (["search", "{idx}", "cats", "-k", "0"], "k"),
        (["search", "{idx}", "cats", "--mode", "fuzzy"], "mode"),
        (["search", "{idx}", "   "], "query"),
        (["index", "add", "{idx}", "{missing}"], "missing"),
        (["index", "create", "{idx}", "--model", "{model}"], "not an empty directory"),
        (["index", "stats", "{nowhere}"], "nowhere"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path,
    hash_model: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    path = _index(tmp_path, hash_model)
    run(["index", "add", str(path), str(_jsonl(tmp_path / "d.jsonl", GOOD))])
    before = sorted(p.name for p in (path / "dense").iterdir())
    capsys.readouterr()
    values = {
        "idx": str(path),
        "missing": str(tmp_path / "missing.jsonl"),
        "model": hash_model,
        "nowhere": str(tmp_path / "nowhere"),
    }
    code = run([a.format(**values) for a in args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err
    with Index.open(path) as idx:
        assert len(idx) == 2
    assert sorted(p.name for p in (path / "dense").iterdir()) == before


def test_sparse_index_from_the_cli(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`index create --sparse FOLDER` stores SPLADE postings that `search --mode sparse` reads."""
    from test_splade_helpers import build_tiny_mlm

    folder = build_tiny_mlm(tmp_path / "mlm")
    path = tmp_path / "idx"
    assert run(["index", "create", str(path), "--model", hash_model, "--sparse", str(folder)]) == 0
    docs = _jsonl(tmp_path / "docs.jsonl", GOOD)
    assert run(["index", "add", str(path), str(docs)]) == 0
    capsys.readouterr()
    assert run(["search", str(path), "cats purr", "--mode", "sparse", "-k", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    with Index.open(path) as index:
        assert index.stats().n_docs == 2
    # a dense-only index refuses sparse search with a one-line error, not a traceback
    plain = _index(tmp_path / "plain", hash_model)
    assert run(["index", "add", str(plain), str(docs)]) == 0
    capsys.readouterr()
    assert run(["search", str(plain), "cats", "--mode", "sparse"]) != 0
    assert "sparse" in capsys.readouterr().err
