"""Tests for embedstack.eval.trec: TREC run files."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedstack.errors import InvalidInput
from embedstack.eval import evaluate, read_trec_run, write_trec_run


def test_write_sorts_by_score_and_ranks_from_one(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_trec_run({"q2": {"a": 0.1, "b": 0.7, "c": 0.7}, "q1": {"x": -1.5}}, path, tag="t")
    assert path.read_text().splitlines() == [
        "q2 Q0 b 1 0.7 t",
        "q2 Q0 c 2 0.7 t",
        "q2 Q0 a 3 0.1 t",
        "q1 Q0 x 1 -1.5 t",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temp file left


def test_round_trip_is_exact_and_evaluates_the_same(tmp_path: Path) -> None:
    run = {"q1": {"d1": 1 / 3, "d2": 0.1 + 0.2, "d3": 1e-300}, "q2": {"d1": 2.0, "d4": 2.0}}
    path = tmp_path / "run.trec"
    write_trec_run(run, path)
    back = read_trec_run(path)
    assert back == run
    qrels = {"q1": {"d2": 1}, "q2": {"d4": 1}}
    assert evaluate(qrels, back, [1, 2]) == evaluate(qrels, run, [1, 2])


def test_read_accepts_any_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "run.txt"
    path.write_text("q1\tQ0\td1\t1\t3\tbm25\n\nq1  Q0 d2 2 2.5 bm25\n")
    assert read_trec_run(path) == {"q1": {"d1": 3.0, "d2": 2.5}}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 0.4\n", r":2: expected 6 fields"),
        ("q1 Q0 d1 1 high tag\n", r":1: score 'high'"),
        ("q1 Q0 d1 1 nan tag\n", r":1: score 'nan' is not finite"),
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", r":2: document 'd1' appears twice"),
    ],
)
def test_read_malformed(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.trec"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=match):
        read_trec_run(path)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        read_trec_run(tmp_path / "nope.trec")


@pytest.mark.parametrize(
    ("run", "tag"),
    [
        ({"q 1": {"d": 1.0}}, "t"),
        ({"q": {"d\t1": 1.0}}, "t"),
        ({"q": {"d": 1.0}}, "my tag"),
        ({"q": {"d": float("inf")}}, "t"),
    ],
)
def test_write_rejects_unwritable(
    tmp_path: Path, run: dict[str, dict[str, float]], tag: str
) -> None:
    path = tmp_path / "run.trec"
    with pytest.raises(InvalidInput):
        write_trec_run(run, path, tag=tag)
    assert not path.exists()
