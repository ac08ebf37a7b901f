"""``benchmarks/open_time.py``: every open of its series is timed in a fresh process, and its
mid-series write lands in the index it measures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from embedstack import HashEncoder
from embedstack.index import Index

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import open_time  # noqa: E402


def test_a_series_times_each_open_and_writes_between(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with Index.create(path, encoder=HashEncoder(256)) as idx:
        idx.add([{"id": f"d{i}", "text": f"protein folding {i}"} for i in range(5)])
    out = tmp_path / "report.json"
    open_time.main([str(path), "--repeat", "2", "--write", "3", "--out", str(out)])
    report = json.loads(out.read_text())
    counts = {key: len(value["runs"]) for key, value in report.items() if isinstance(value, dict)}
    assert counts == {"first_writer_open": 1, "writer_reopen": 2, "reader_reopen": 2,
                      "first_reader_after_write": 1, "first_writer_after_write": 1,
                      "reopen_after_write": 4}  # fmt: skip
    for value in report.values():
        if isinstance(value, dict):
            for run in value["runs"]:
                assert 0 < run["open_cpu_s"] and 0 < run["open_s"] and run["first_query_s"] > 0
    with Index.open(path, encoder=HashEncoder(256), readonly=True) as idx:
        assert idx.stats().n_docs == 5 + 3
