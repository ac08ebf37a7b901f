"""The report says what a pick's time budget left out and what it measured with int8 weights
(pick.json ``not_measured`` and ``models[].encoder_precision``; see eval/pick/plan.py)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

from _report_data import candidate, pick
from embedstack.errors import InvalidInput
from embedstack.eval.report import load_results, render_pick

LEFT = {
    "model": "all-mpnet-base-v2",
    "reason": "time_budget",
    "estimated_encode_s": 6912.0,
    "over_by_s": 5892.0,
    "time_budget_min_to_include": 160,
    "time_budget_min_alone": 155,
    "message": "all-mpnet-base-v2 not measured: estimated 115.2 min ...",
}
STOPPED = {
    "model": "slow-drift",
    "reason": "deadline",
    "estimated_encode_s": 1500.0,
    "docs_encoded": 900,
    "time_budget_min_alone": 40,
    "message": "slow-drift not measured: its corpus encoding was stopped after 900 ...",
}
INT8 = {
    "guard": {"probe_min_cosine": 0.9767, "reduce_range": True},
    "sample_cosine": {"min": 0.9912, "mean": 0.99731, "n_docs": 16},
}


def _pick(**extra: Any) -> dict[str, Any]:
    cands = [candidate("mA", 384, "float32", "dense", 0.7, 20.0),
             candidate("mB", 384, "float32", "dense", 0.6, 10.0)]  # fmt: skip
    data = pick(cands)
    data.update(extra)
    return data


def _rows(md: str, header: str) -> list[list[str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_left_out_and_int8_models_are_said(tmp_path: Path) -> None:
    data = _pick(not_measured=[LEFT, STOPPED])
    data["models"][0].update(encoder_precision="int8", int8=INT8,
                             plan_note="float32 weights did not fit; int8 did")  # fmt: skip
    render_pick(data, tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "NOT MEASURED" in md and "2 model(s) did not fit the time budget" in md
    rows = _rows(md, "model | estimated corpus encoding")
    assert rows[0] == ["all-mpnet-base-v2", f"{6912 / 60:.1f} min", f"{5892 / 60:.1f} min",
                       "--time-budget-min 160 (all), or --models all-mpnet-base-v2 "
                       "--time-budget-min 155 (alone)"]  # fmt: skip
    assert rows[1] == ["slow-drift", f"{1500 / 60:.1f} min", "stopped after 900 documents",
                       "--models slow-drift --time-budget-min 40"]  # fmt: skip
    assert (
        "mA: float32 weights did not fit; int8 did. Quality cost: int8 guard probe min cosine "
        "0.977; min cosine 0.991 / mean 0.9973 on 16 sampled documents of this corpus." in md
    )
    models = _rows(md, "model | dim")
    assert [r[-1] for r in models] == ["int8", "float32"]  # the weights column
    page = html.unescape((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert "NOT MEASURED" in page and "stopped after 900 documents" in page
    assert "Quality cost: int8 guard probe min cosine 0.977" in re.sub(r"\s+", " ", page)


def test_nothing_said_when_every_model_was_measured_in_float32(tmp_path: Path) -> None:
    render_pick(_pick(not_measured=[]), tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Time budget" not in md and "NOT MEASURED" not in md


@pytest.mark.parametrize(
    ("left", "message"),
    [
        ({"model": "x"}, r"not_measured\[0\]\.message must be a non-empty string"),
        (
            {"model": "x", "message": "m", "estimated_encode_s": "long"},
            r"not_measured\[0\]\.estimated_encode_s must be a number",
        ),
        ("x", r"not_measured\[0\] must be an object"),
    ],  # fmt: skip
)
def test_bad_not_measured_entries_name_the_key(left: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_results([_pick(not_measured=[left])], ["p.json"])
    with pytest.raises(InvalidInput, match="not_measured must be a list"):
        load_results([_pick(not_measured={"model": "x"})])
