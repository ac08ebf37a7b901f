"""Read and normalise what ``embedstack report`` renders: pick.json files and eval results.

Two input kinds (parsed by :mod:`embedstack.eval.report.parse`):

* ``{"kind": "embedstack.pick", "format_version": 1, ...}``: every candidate ``pick``
  measured, its recommendation, the data, budgets and prices.
* the flat JSON of ``embedstack eval ... --json FILE`` (metric keys, ``latency_ms_p50/p99``,
  ``index_bytes``, ``n_queries`` and ``config``): one candidate, judged.

Several inputs merge into one :class:`Study` when they measure the same dataset with the
same kind of evaluation; mixing judged and proxy numbers, datasets, tasks or main metrics
raises :class:`~embedstack.errors.InvalidInput`. The Pareto front is recomputed over the
merged candidates (main metric up, p99 latency down, bytes per document down).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.eval.report.parse import PICK_KIND, read_eval, read_pick, read_result
from embedstack.eval.report.study import Candidate, Run, Study

__all__ = ["Candidate", "Run", "Study", "load_results", "pareto_front", "read_result"]


def pareto_front(candidates: Sequence[Candidate]) -> set[str]:
    """Ids of the candidates no other candidate dominates.

    ``a`` dominates ``b`` when ``a`` is at least as good on all three axes (main metric
    higher or equal, p99 latency and bytes per document lower or equal) and better on one.
    An unknown latency or size counts as the worst value; a candidate without a main metric
    value is never on the front.
    """
    inf = math.inf
    points = {
        c.id: (
            c.score,
            c.latency_ms_p99 if c.latency_ms_p99 is not None else inf,
            c.bytes_per_doc if c.bytes_per_doc is not None else inf,
        )
        for c in candidates
        if c.score is not None
    }

    def dominates(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        at_least = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
        return at_least and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])

    return {
        cid
        for cid, point in points.items()
        if not any(dominates(other, point) for oid, other in points.items() if oid != cid)
    }


def _same(values: list[tuple[str, str]], what: str, hint: str) -> str:
    distinct = sorted({v for _, v in values})
    if len(distinct) > 1:
        detail = "; ".join(f"{label}: {value}" for label, value in values)
        raise InvalidInput(f"cannot mix {what} in one report ({detail}): {hint}")
    return distinct[0]


def load_results(results: Sequence[Mapping[str, Any]], labels: Sequence[str] = ()) -> Study:
    """Normalise and merge pick.json and eval result dicts into one :class:`Study`.

    Args:
        results: parsed JSON objects, each a pick.json or an ``embedstack eval`` result.
        labels: how errors and the report name each input (file names); ``input N`` when
            not given.

    Raises:
        InvalidInput: an input of unknown kind or with invalid fields, no input, or inputs
            that cannot share a report (judged and proxy evaluations, different datasets,
            tasks or main metrics).
    """
    if not results:
        raise InvalidInput("no results to report on: give at least one pick.json or eval JSON")
    parts, runs = [], []
    for i, raw in enumerate(results):
        label = labels[i] if i < len(labels) else f"input {i + 1}"
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"{label}: expected a JSON object, got {type(raw).__name__}")
        if raw.get("kind") == PICK_KIND:
            part, run = read_pick(raw, label, i)
        elif "kind" not in raw and isinstance(raw.get("config"), Mapping):
            part, run = read_eval(raw, label, i)
        else:
            kind = raw.get("kind")
            raise InvalidInput(
                f"{label}: not an embedstack pick.json (kind {PICK_KIND!r}) nor an "
                f"`embedstack eval --json` result" + (f" (kind {kind!r})" if kind else "")
            )
        parts.append((label, part))
        runs.append(run)
    evaluation = _same(
        [(label, p["evaluation"]) for label, p in parts],
        "judged and proxy evaluations",
        "proxy numbers (queries built from the corpus) are not comparable with judged ones",
    )
    task = _same([(label, p["task"]) for label, p in parts], "tasks", "report each separately")
    dataset = _same(
        [(label, p["dataset"]) for label, p in parts],
        "datasets",
        "one report compares candidates on one dataset",
    )
    splits = [(label, str(p["split"])) for label, p in parts if p.get("split")]
    if splits:
        _same(splits, "dataset splits", "evaluate every candidate on the same split")
    candidates: list[Candidate] = [c for _, p in parts for c in p["candidates"]]
    main = _same(
        [(c.id, c.main_metric) for c in candidates],
        "main metrics",
        "candidates must be ranked by the same metric",
    )
    seen: dict[str, int] = {}
    unique, renamed = [], {}
    for c in candidates:
        seen[c.id] = seen.get(c.id, 0) + 1
        unique.append(c if seen[c.id] == 1 else replace(c, id=f"{c.id}#{seen[c.id]}"))
        renamed[(c.source, c.id)] = unique[-1].id
    recommended = []
    for i, run in enumerate(runs):
        chosen = (run.recommendation or {}).get("candidate")
        if chosen is not None:
            if (i, chosen) not in renamed:
                raise InvalidInput(
                    f"{run.label}: recommendation.candidate {chosen!r} is not one of its candidates"
                )
            recommended.append(renamed[(i, chosen)])
    front = pareto_front(unique)
    merged = tuple(replace(c, pareto=c.id in front) for c in unique)
    notes = [n for _, p in parts for n in p["notes"]]
    if len(parts) == 1 and runs[0].kind == "pick" and parts[0][1]["stored_front"] != front:
        notes.append(
            f"{parts[0][0]} marks {len(parts[0][1]['stored_front'])} candidates as Pareto-optimal, "
            f"recomputed here: {len(front)}; the table shows the recomputed front"
        )
    counts = sorted({p["n_queries"] for _, p in parts if isinstance(p["n_queries"], int)})
    if len(counts) > 1:
        notes.append(
            "the inputs were measured on different numbers of queries ("
            + ", ".join(map(str, counts))
            + "): differences between them are less certain"
        )
    picks = [p for _, p in parts if p["prices"] or p["data"]]
    return Study(
        task=task,
        dataset=dataset,
        evaluation=evaluation,
        main_metric=main,
        candidates=merged,
        runs=tuple(runs),
        notes=tuple(dict.fromkeys(notes)),
        proxy_notes=tuple(dict.fromkeys(p["proxy_note"] for _, p in parts if p["proxy_note"])),
        prices=picks[0]["prices"] if picks else {},
        data=picks[0]["data"] if picks else {},
        recommended=tuple(recommended),
    )
