"""``embedstack pick``: measure candidate configurations on your data and recommend one."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from embedstack.cli.app import app, err, out

ListOpt = Annotated[str | None, typer.Option()]


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.0f}"


def _table(result: dict[str, Any], top: int, wide: bool) -> Table:
    data = result["data"]
    label = "PROXY evaluation" if data["evaluation"] == "proxy" else "judged"
    cands = sorted(result["candidates"], key=lambda c: -len(c["id"]))
    main = cands[0]["main_metric"]
    task = result.get("task", "retrieval")
    if task == "retrieval":
        what = f"{data['n_queries']} queries, {data['n_docs']:,} documents ({label})"
    else:
        what = f"{task}, {data['n_examples']} {data['unit']}, {data['n_docs']:,} texts encoded"
    table = Table(title=f"{data['name']}: {what}; top {top} by {main}")
    others = [k for k in cands[0]["metrics"] if k != main][:2]
    extra = [*others, "$/month"] if wide else []
    table.add_column("candidate", overflow="fold", min_width=min(len(cands[0]["id"]), 40))
    for column in (main, *extra[:2], "p99 ms", "B/doc", "$/1M q", *extra[2:], "front",
                   "vs best"):  # fmt: skip
        table.add_column(column, justify="right", no_wrap=True)
    for cand in sorted(result["candidates"], key=lambda c: -c["metrics"][main])[:top]:
        sig = cand["significance"] or {}
        versus = "best"
        if sig.get("p_value") is not None:
            versus = f"{sig['delta']:+.4f}" + ("*" if sig["significant"] else "")
        metrics = cand["metrics"]
        more = [_num(metrics.get(k)) for k in others] if wide else []
        storage = [f"{cand['cost']['storage_usd_per_month']:.2f}"] if wide else []
        table.add_row(
            cand["id"], _num(metrics[main]), *more, f"{cand['latency_ms_p99']:.1f}",
            f"{cand['bytes_per_doc']:,.0f}", f"{cand['cost']['usd_per_1m_queries']:.3f}",
            *storage, "yes" if cand["pareto"] else "", versus,
        )  # fmt: skip
    return table


def _show(result: dict[str, Any], out_dir: Path, top: int) -> None:
    data = result["data"]
    wide = out.width >= 120
    out.print(_table(result, top, wide))
    if not wide:
        out.print("more metrics and storage $/month: widen the terminal or read pick.json")
    best = next(c for c in result["candidates"] if (c["significance"] or {}).get("p_value") is None)
    test = (best["significance"] or {}).get("test", "paired randomization test")
    out.print(f"* significant (Holm-adjusted p < 0.05; {test})", soft_wrap=True)
    if result.get("task", "retrieval") != "retrieval":
        kind = "" if data["latency_kind"] == "text" else f"{data['latency_kind']} "
        out.print(
            f"latency: encoding one {kind}text alone ({data['latency_texts']} "
            "texts); $/1M q: per 1M texts encoded; B/doc: bytes per stored vector",
            soft_wrap=True,
        )
    if data["evaluation"] == "proxy":
        out.print(f"[bold]PROXY[/bold]: {data['proxy_note']}", soft_wrap=True)
    if data["queries_subsampled"]:
        out.print(f"subsampled: {data['subsample_note']}", soft_wrap=True)
    rec = result["recommendation"]
    if rec["candidate"] is None:
        misses = "; ".join(
            f"{m['budget']}: best reachable {m['best_value']:.4g} vs limit {m['limit']:g} "
            f"(over by {m['over_by']:.4g})"
            for m in rec["unmet_budgets"]
        )
        out.print(f"no candidate meets the budgets: {misses}", soft_wrap=True)
    else:
        out.print(f"[bold]recommended[/bold]: {rec['candidate']}", soft_wrap=True)
        for part in ("model", "dimension", "mode", "prefix"):
            out.print(f"  {part}: {rec[part]['reason']}", soft_wrap=True)
    for entry in result.get("not_measured") or []:
        out.print(f"[yellow]not measured[/yellow]: {entry['message']}", soft_wrap=True)
    for warning in rec["warnings"]:
        if any(warning == e["message"] for e in result.get("not_measured") or []):
            continue
        out.print(f"[yellow]warning[/yellow]: {warning}", soft_wrap=True)
    err.print(f"wrote {out_dir / 'pick.json'}")


@app.command()
def pick(
    data: Annotated[
        Path,
        typer.Argument(
            help="BEIR folder (judged), or a corpus: .jsonl or a "
            "folder of text files (proxy evaluation); with --task, the task's .jsonl file "
            "(the format of `embedstack eval --task`)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for pick.json (+ reports).")],
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated registry names or model folders (default: every "
            "local dense model)."
        ),  # fmt: skip
    ] = None,
    dims: Annotated[
        str | None, typer.Option(help="'full' and/or sizes (default: full,256,128).")
    ] = None,
    precisions: Annotated[
        str | None, typer.Option(help="float32,int8,binary (default: float32,int8).")
    ] = None,
    modes: Annotated[
        str | None, typer.Option(help="dense,bm25,hybrid(,colbert) (default: dense,bm25,hybrid).")
    ] = None,
    latency_budget_ms: Annotated[
        float | None, typer.Option(help="p99 query latency limit.")
    ] = None,
    storage_budget_gb: Annotated[
        float | None, typer.Option(help="Index size limit at --corpus-size.")
    ] = None,
    corpus_size: Annotated[
        int, typer.Option(help="Documents in production (costs, storage budget).")
    ] = 1_000_000,
    languages: Annotated[str | None, typer.Option(help="Languages to cover, e.g. en,de.")] = None,
    price_file: Annotated[
        Path | None, typer.Option(help="Price JSON (default: built-in list prices).")
    ] = None,
    time_budget_min: Annotated[
        float | None,
        typer.Option(
            help="Finish in about this many minutes: probe each model's encoding speed first, "
            "use int8 weights where only that fits, list models that still do not fit as not "
            "measured, subsample queries."
        ),
    ] = None,
    encoder_precision: Annotated[
        str,
        typer.Option(
            help="Model weights: auto (float32, or guarded int8 when only that fits "
            "--time-budget-min), float32 or int8."
        ),
    ] = "auto",
    task: Annotated[
        str,
        typer.Option(
            help="What the embeddings are for: retrieval, or classification, clustering, "
            "pair-classification, reranking (models x dims x precisions, scored by the task's "
            "main metric)."
        ),
    ] = "retrieval",
    split: Annotated[
        str, typer.Option(help="qrels split of a BEIR folder, or the task file's split.")
    ] = "test",
    seed: Annotated[int, typer.Option(help="Seed of proxy queries, subsampling and tests.")] = 0,
    top: Annotated[int, typer.Option(help="Candidates shown in the table.")] = 10,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where corpus vectors are kept between runs (default: the embedstack cache); "
            "an empty folder times a cold run."
        ),
    ] = None,
) -> None:
    """Measure models x dims x precisions x modes on your data; recommend one.

    With --task (classification, clustering, pair-classification, reranking) DATA is that
    task's labelled .jsonl and the grid is models x dims x precisions, scored by the task's
    main metric (accuracy, v_measure, max_ap, map), with the test that task calls for.

    Reports nDCG@10, recall@100, MRR@10, p50/p99 latency (one query at a time), bytes per
    document and costs per candidate, tests differences against the best (paired
    randomization), and recommends a Pareto-optimal configuration within the budgets. When
    no candidate meets a budget it says which and by how much (exit code 0, no
    recommendation)."""
    from embedstack.encoders.backends import avoid_ort_spinning
    from embedstack.eval.pick import PickOptions, run_pick

    options = PickOptions(
        models=_split(models), dims=_split(dims), precisions=_split(precisions),
        modes=_split(modes), latency_budget_ms=latency_budget_ms,
        storage_budget_gb=storage_budget_gb, corpus_size=corpus_size,
        languages=_split(languages), price_file=price_file, time_budget_min=time_budget_min,
        encoder_precision=cast(Any, encoder_precision), split=split, seed=seed, cache_dir=cache_dir,
        task=task,
    )  # fmt: skip
    given = {"models": models, "dims": dims, "precisions": precisions, "modes": modes,
             "latency-budget-ms": latency_budget_ms, "storage-budget-gb": storage_budget_gb,
             "corpus-size": corpus_size if corpus_size != 1_000_000 else None,
             "languages": languages, "price-file": price_file,
             "time-budget-min": time_budget_min,
             "encoder-precision": encoder_precision if encoder_precision != "auto" else None,
             "task": task if task != "retrieval" else None,
             "split": split if split != "test" else None,
             "seed": seed or None, "cache-dir": cache_dir}  # fmt: skip
    words = ["embedstack", "pick", str(data), "--out", str(out_dir)]
    words += [w for k, v in given.items() if v is not None for w in (f"--{k}", str(v))]
    command = " ".join(shlex.quote(w) for w in words)
    avoid_ort_spinning()  # several models take turns on the same cores
    library = logging.getLogger("embedstack.pick")
    level = library.level
    library.setLevel(logging.INFO)  # progress lines when stderr is not a terminal
    try:
        result = run_pick(data, out_dir, options, command=command)
    finally:
        library.setLevel(level)
    _show(result, out_dir, max(top, 1))
