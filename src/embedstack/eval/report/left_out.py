"""The report's account of a pick's time budget: models left out, models measured with int8.

``embedstack pick --time-budget-min`` estimates every model's corpus encoding first; a model
that does not fit is listed in pick.json's ``not_measured`` (the estimate, how far over the
budget, what to run to include it), and one that fits only with guarded int8 weights is
measured with them (``models[].encoder_precision == "int8"``, its cosine to float32 in
``models[].int8``). Both are said here, so nobody reads a missing model as a losing one or
int8 numbers as float32 ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embedstack.eval.report.blocks import Block, Bullets, Callout, Heading, Para, Table
from embedstack.eval.report.study import Study

__all__ = ["budget_blocks"]


def _minutes(value: Any) -> str:
    return f"{value / 60:.1f} min" if isinstance(value, int | float) else "—"


def _left_out_row(entry: Mapping[str, Any]) -> tuple[str, ...]:
    if entry.get("reason") == "deadline":
        over = f"stopped after {entry.get('docs_encoded', '?')} documents"
        fix = f"--models {entry['model']} --time-budget-min {entry.get('time_budget_min_alone')}"
    else:
        over = _minutes(entry.get("over_by_s"))
        fix = (
            f"--time-budget-min {entry.get('time_budget_min_to_include')} (all), or --models "
            f"{entry['model']} --time-budget-min {entry.get('time_budget_min_alone')} (alone)"
        )
    return (str(entry["model"]), _minutes(entry.get("estimated_encode_s")), over, fix)


def _int8_line(model: Mapping[str, Any]) -> str:
    facts = model.get("int8") or {}
    parts = []
    guard = facts.get("guard") or {}
    if isinstance(guard.get("probe_min_cosine"), int | float):
        parts.append(f"int8 guard probe min cosine {guard['probe_min_cosine']:.3f}")
    sample = facts.get("sample_cosine") or {}
    if isinstance(sample.get("min"), int | float):
        parts.append(
            f"min cosine {sample['min']:.3f} / mean {sample['mean']:.4f} on "
            f"{sample['n_docs']} sampled documents of this corpus"
        )
    cost = "; ".join(parts) if parts else "cosine to float32 not checked"
    why = model.get("plan_note") or "asked for with --encoder-precision int8"
    return f"{model.get('name')}: {why}. Quality cost: {cost}."


def budget_blocks(study: Study) -> list[Block]:
    """The "Time budget" section: nothing when every model was measured in float32."""
    left = [e for run in study.runs for e in run.not_measured]
    int8 = [m for run in study.runs for m in run.models if m.get("encoder_precision") == "int8"]
    if not left and not int8:
        return []
    blocks: list[Block] = [Heading("Time budget: models left out or measured with int8")]
    if left:
        blocks.append(
            Callout(
                "NOT MEASURED",
                f"{len(left)} model(s) did not fit the time budget and are not in the tables "
                "or plots: they did not lose, they were not measured. The estimate comes from "
                "encoding a few sampled documents; the corpus was never subsampled.",
            )
        )
        headers = ("model", "estimated corpus encoding", "over the budget by", "to include it")
        blocks.append(Table(headers, tuple(_left_out_row(e) for e in left)))
    if int8:
        blocks.append(
            Para(
                "Measured with guarded int8 weights (its candidates' numbers are those of the "
                "int8 model, not float32):"
            )
        )
        blocks.append(Bullets(tuple(_int8_line(m) for m in int8)))
    return blocks
