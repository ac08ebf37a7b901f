"""What the report says: the sections of a :class:`Study` as a list of blocks.

The content is decided once here; ``markdown.py`` and ``html.py`` only format it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from embedstack.eval.report.blocks import (
    CHECK,
    STAR,
    Block,
    Bullets,
    Callout,
    Code,
    Figure,
    Heading,
    Para,
    Table,
    fmt_budget,
    fmt_bytes,
    fmt_duration,
    fmt_miss,
    fmt_ms,
    fmt_num,
    fmt_significance,
    fmt_usd,
)
from embedstack.eval.report.derived import api_lines, by_main_metric, retention
from embedstack.eval.report.left_out import budget_blocks
from embedstack.eval.report.plots import PLOT_FILES, Plot
from embedstack.eval.report.study import Study

__all__ = ["build"]

MAX_OTHER_METRICS = 3


def _data(study: Study) -> list[Block]:
    blocks: list[Block] = [Heading("Data")]
    if study.evaluation == "proxy":
        note = " ".join(study.proxy_notes)
        blocks.append(
            Callout(
                "PROXY EVALUATION",
                "these numbers come from queries built from the corpus itself, not from human "
                f"relevance judgements: compare candidates with them, but do not quote them as "
                f"retrieval quality. {note}".strip(),
            )
        )
    else:
        source = "relevance judgements (qrels)" if study.task == "retrieval" else "gold labels"
        blocks.append(
            Para(f"Judged evaluation: the {source} of {study.dataset} score every candidate.")
        )
    facts = [
        f"dataset: {study.dataset}",
        f"task: {study.task}",
        f"main metric: {study.main_metric}",
    ]
    data = study.data
    for key, label in (
        ("n_docs", "documents"),
        ("n_queries", "queries"),
        ("mean_doc_tokens", "mean tokens per document"),
    ):
        if isinstance(data.get(key), int | float):
            facts.append(
                f"{label}: {data[key]:,.0f}"
                if key != "mean_doc_tokens"
                else f"{label}: {data[key]:.1f}"
            )
    share = data.get("share_docs_over_512_tokens")
    if isinstance(share, int | float):
        facts.append(f"documents over 512 tokens: {100 * share:.1f}%")
    facts += list(study.notes)
    blocks.append(Bullets(tuple(facts)))
    return blocks


def _recommendations(study: Study) -> list[Block]:
    picks = [run for run in study.runs if run.kind == "pick"]
    if not picks:
        return [
            Heading("Recommendation"),
            Para("These are eval results, not a pick: there is no recommendation."),
        ]
    blocks: list[Block] = []
    for run in picks:
        rec = run.recommendation or {}
        blocks.append(Heading("Recommendation" + (f" ({run.label})" if len(picks) > 1 else "")))
        budgets = [
            f"{k} {v:,}"
            for k, v in sorted(run.budgets.items())
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        blocks.append(Para("Budgets: " + ("; ".join(budgets) if budgets else "none given") + "."))
        chosen = rec.get("candidate")
        if chosen is None:
            blocks.append(Callout("NO RECOMMENDATION", "no candidate meets the budgets."))
        else:
            blocks.append(Para(f"{STAR} Recommended configuration: {chosen}"))
        items = []
        for key, label, fields in (
            ("model", "Model", ("name",)),
            ("dimension", "Dimension", ("dim", "precision")),
            ("mode", "Mode", ("mode",)),
            ("prefix", "Query prefix", ("query_prefix", "document_prefix")),
        ):
            part = rec.get(key)
            if not isinstance(part, Mapping):
                continue
            if key == "prefix":  # "query 'query: '; document 'passage: '" or "none"
                values = [f"{f.split('_')[0]} {part[f]!r};" for f in fields if part.get(f)]
                values = [" ".join(values).rstrip(";")] if values else ["none"]
            else:
                values = [str(part[f]) for f in fields if part.get(f) is not None]
            reason = part.get("reason")
            items.append(f"{label}: {' '.join(values) or '—'}" + (f" — {reason}" if reason else ""))
        if items:
            blocks.append(Bullets(tuple(items)))
        plan = [str(p) for p in rec.get("evaluation_plan") or []]
        if plan:
            blocks += [Heading("Evaluation plan", 3), Bullets(tuple(plan))]
        unmet = [
            fmt_budget(u, "best_value")
            for u in rec.get("unmet_budgets") or []
            if isinstance(u, Mapping)
        ]
        if unmet:
            blocks += [
                Callout("UNMET BUDGETS", "no candidate meets these budgets:"),
                Bullets(tuple(unmet)),
            ]
        warnings = [str(w) for w in rec.get("warnings") or []]
        merged = study.recommended
        off_front = [cid for cid in merged if (c := study.candidate(cid)) and not c.pareto]
        warnings += [
            f"{cid} is not on the Pareto front of the {len(study.candidates)} merged candidates"
            for cid in off_front
        ]
        if warnings:
            count = f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
            blocks += [Callout("WARNINGS", f"{count} to read before deploying:"),
                       Bullets(tuple(warnings))]  # fmt: skip
    return blocks


def _candidates(study: Study) -> list[Block]:
    ordered = by_main_metric(study.candidates)
    names = sorted({k for c in ordered for k in c.metrics if k != study.main_metric})
    others = names[:MAX_OTHER_METRICS]
    headers = (
        "",
        "candidate",
        study.main_metric,
        *others,
        "p50 ms",
        "p99 ms",
        "bytes/doc",
        "$/1M queries",
        "storage $/month",
        "Pareto",
        "budgets",
        "vs best",
    )
    rows = []
    for c in ordered:
        budgets = (
            ""
            if c.within_budgets is None
            else CHECK
            if c.within_budgets
            else "; ".join(fmt_miss(m) for m in c.budget_misses) or "missed"
        )
        rows.append(
            (
                STAR if c.id in study.recommended else "",
                c.id,
                fmt_num(c.score),
                *[fmt_num(c.metrics.get(k)) for k in others],
                fmt_ms(c.latency_ms_p50),
                fmt_ms(c.latency_ms_p99),
                fmt_bytes(c.bytes_per_doc),
                fmt_usd(c.usd_per_1m_queries),
                fmt_usd(c.storage_usd_per_month),
                CHECK if c.pareto else "",
                budgets,
                fmt_significance(c),
            )
        )
    tests = sorted(
        {
            str(c.significance["test"])
            for c in ordered
            if c.significance and c.significance.get("test")
        }
    )
    baselines = sorted(
        {
            str(c.significance["baseline"])
            for c in ordered
            if c.significance and c.significance.get("baseline")
        }
    )
    if tests:
        sig = (
            f"'vs best': the difference in {study.main_metric} from the best candidate "
            f"({', '.join(baselines)}) and its p-value, by {'; '.join(tests)} over "
            "per-query scores; 'significant' is the pick's verdict."
        )
    else:
        sig = (
            "'vs best': no significance test in these inputs (eval results keep no "
            "per-query scores); treat small differences as uncertain."
        )
    front = sum(c.pareto for c in ordered)
    return [
        Heading("Candidates"),
        Para(
            f"{len(ordered)} candidates, best {study.main_metric} first. {STAR} marks the "
            f"recommendation. Pareto {CHECK}: no other candidate is at least as good on "
            f"{study.main_metric}, p99 latency and bytes per document and better on one "
            f"({front} on the front; an unknown latency or size counts as the worst)."
        ),
        Para(sig),
        Table(headers, tuple(rows)),
    ]


def _cost_section(study: Study) -> list[Block]:
    blocks: list[Block] = [Heading("Costs")]
    prices = study.prices
    corpus = next(
        (
            r.budgets.get("corpus_size")
            for r in study.runs
            if isinstance(r.budgets.get("corpus_size"), int)
        ),
        None,
    )
    if prices:
        facts = [f"price file: {prices.get('source_file', 'unknown')}"]
        for key, label in (
            ("cpu_usd_per_hour", "CPU $/hour"),
            ("storage_usd_per_gb_month", "storage $/GB-month"),
        ):
            if isinstance(prices.get(key), int | float):
                facts.append(f"{label}: {prices[key]:g}")
        if corpus:
            facts.append(f"storage priced at a corpus of {corpus:,} documents")
        facts += [str(n) for n in prices.get("notes") or []]
        blocks.append(Bullets(tuple(facts)))
    costed = [
        c
        for c in by_main_metric(study.candidates)
        if c.usd_per_1m_queries is not None or c.storage_usd_per_month is not None
    ]
    if costed:
        blocks.append(
            Table(
                ("candidate", study.main_metric, "$/1M queries", "storage $/month"),
                tuple(
                    (
                        c.id,
                        fmt_num(c.score),
                        fmt_usd(c.usd_per_1m_queries),
                        fmt_usd(c.storage_usd_per_month),
                    )
                    for c in costed
                ),
            )
        )
    else:
        blocks.append(Para("No candidate carries costs (eval results have none)."))
    lines = []
    for api in api_lines(study):
        text = f"API {api.name}: {fmt_usd(api.usd_per_1m_tokens)} per 1M tokens"
        if api.usd_per_1m_queries is not None:
            text += f", {fmt_usd(api.usd_per_1m_queries)} per 1M queries"
            if api.tokens_per_query is not None:
                text += f" (at {api.tokens_per_query:.1f} tokens per query)"
        else:
            text += " (per 1M queries: that price x the tokens per query, not recorded here)"
        if api.corpus_usd is not None:
            text += f"; embedding the corpus once: {fmt_usd(api.corpus_usd)}"
        lines.append(text + (f" (source: {api.source})" if api.source else ""))
    if lines:
        blocks += [Para("Self-host vs API, the comparison line:"), Bullets(tuple(lines))]
    return blocks


def _plots(study: Study, plots: Sequence[Plot]) -> list[Block]:
    blocks: list[Block] = [Heading("Plots")]
    for plot in plots:
        blocks.append(Heading(plot.title, 3))
        blocks.append(Figure(plot) if plot.png is not None else Para(plot.skipped or ""))
        if plot.file == PLOT_FILES[3] and plot.png is not None:
            blocks.append(
                Table(
                    (
                        "model",
                        "dim",
                        "mode",
                        "precision",
                        study.main_metric,
                        "float32",
                        "retention",
                    ),
                    tuple(
                        (
                            r.model,
                            str(r.dim),
                            r.mode,
                            r.precision,
                            fmt_num(r.value),
                            fmt_num(r.float32_value),
                            f"{100 * r.ratio:.1f}%",
                        )
                        for r in retention(study)
                    ),
                )
            )
    return blocks


def _models(study: Study) -> list[Block]:
    models = [m for run in study.runs for m in run.models]
    if not models:
        return []
    rows = []
    for m in models:
        speed = m.get("encode_docs_per_s")
        rows.append(
            (
                str(m.get("name", "")),
                str(m.get("full_dim", "")),
                str(m.get("max_length", "")),
                ",".join(map(str, m.get("languages") or [])),
                str(m.get("license", "")),
                f"{speed:,.1f}" if isinstance(speed, int | float) else "—",
                ",".join(map(str, m.get("matryoshka_dims") or [])) or "—",
                str(m.get("encoder_precision") or "float32"),
            )
        )
    headers = ("model", "dim", "max length", "languages", "license", "docs/s", "Matryoshka dims",
               "weights")  # fmt: skip
    return [Heading("Models"), Table(headers, tuple(rows))]


def _runs(study: Study) -> list[Block]:
    blocks: list[Block] = [Heading("How this was measured")]
    for run in study.runs:
        if run.kind == "eval":
            blocks.append(Para(f"{run.label}: an `embedstack eval` result (one candidate)."))
            continue
        when = f", created {run.created}" if run.created else ""
        blocks.append(Para(f"{run.label}: elapsed {fmt_duration(run.elapsed_s)}{when}."))
        if run.command:
            blocks.append(Code(run.command))
    return blocks


def build(study: Study, plots: Sequence[Plot], title: str) -> list[Block]:
    """Every block of the report, in order."""
    return [
        Heading(title, 1),
        *_data(study),
        *_recommendations(study),
        *_candidates(study),
        *_plots(study, plots),
        *_cost_section(study),
        *_models(study),
        *budget_blocks(study),
        *_runs(study),
    ]
