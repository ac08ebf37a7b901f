"""``embedstack report``: pick.json / eval results → report.md, self-contained report.html, PNGs.

Renders are slow-ish (matplotlib), so the two main reports are rendered once per module and
inspected by several tests; each test that needs another input renders its own.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _report_data import SIG_TEST, candidate, eval_result, grid, pick
from embedstack.cli import run
from embedstack.errors import InvalidInput
from embedstack.eval.report import load_results, read_result, render_pick, render_report
from embedstack.eval.report.load import pareto_front
from embedstack.eval.report.plots import PLOT_FILES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT_NAME = "<script>alert(1)</script>"


def _table(markdown: str, first_header: str = "candidate") -> list[dict[str, str]]:
    """The rows of the Markdown table whose second header is ``first_header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"|   | {first_header} |"))
    split = re.compile(r"(?<!\\)\|")

    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in split.split(line)[1:-1]]

    headers = cells(lines[start])
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(headers, cells(line), strict=True)))
    return rows


def _small() -> list[dict[str, Any]]:
    """Seven candidates whose Pareto front is worked out by hand (metric up, p99 down,
    bytes down): A best metric; B fastest at .65; C dominated by B (slower, same size);
    D smallest at .60; E dominated by D (slower); F dominated by A on every axis; G equal
    to B on every axis (neither dominates the other, so both stay)."""
    spec = [("A", 0.70, 20.0, 1536.0), ("B", 0.65, 10.0, 1536.0), ("C", 0.65, 12.0, 1536.0),
            ("D", 0.60, 10.0, 384.0), ("E", 0.60, 11.0, 384.0), ("F", 0.50, 30.0, 3072.0),
            ("G", 0.65, 10.0, 1536.0)]  # fmt: skip
    out = []
    for name, score, p99, size in spec:
        model = SCRIPT_NAME if name == "E" else f"m{name}"
        out.append(candidate(model, 384, "float32", "dense", score, p99, bytes_per_doc=size))
    return out


SMALL_FRONT = {"mA|384|float32|dense", "mB|384|float32|dense", "mD|384|float32|dense",
               "mG|384|float32|dense"}  # fmt: skip
UNMET = [{"budget": "latency_ms", "limit": 5, "best_value": 10.0, "over_by": 5.0}]


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict[str, Any]]:
    out = tmp_path_factory.mktemp("judged")
    data = pick(grid())
    data["data"]["mean_query_tokens"] = 12.0
    return out, render_pick(data, out), data


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("proxy")
    misses = [{"budget": "latency_ms", "limit": 5, "value": 20.0, "over_by": 15.0}]
    data = pick(
        [dict(c, within_budgets=False, budget_misses=misses) for c in _small()],
        evaluation="proxy",
        name="mycorpus",
        recommended=None,
        unmet=UNMET,
    )
    return out, render_pick(data, out)


def test_writes_markdown_html_and_valid_pngs(judged: Any) -> None:
    from matplotlib.image import imread

    out, paths, _ = judged
    assert paths == [out / "report.md", out / "report.html", *(out / f for f in PLOT_FILES)]
    for path in paths[2:]:
        assert path.read_bytes().startswith(PNG_MAGIC)
        pixels = imread(path)  # decodes the whole file: a truncated PNG raises
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert float(pixels[..., :3].max() - pixels[..., :3].min()) > 0.5  # not a blank canvas


def test_html_is_self_contained(judged: Any) -> None:
    out, paths, _ = judged
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?:", page, re.IGNORECASE)
    assert not re.search(r"<link|@import|url\(", page)
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == len(PLOT_FILES)
    for source, png in zip(sources, paths[2:], strict=True):
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert base64.b64decode(source[len(prefix) :]) == png.read_bytes()
    assert f'data-images-expected="{len(PLOT_FILES)}"' in page


def test_same_input_gives_identical_files(judged: Any, tmp_path: Path) -> None:
    out, paths, data = judged
    again = render_pick(data, tmp_path)
    for first, second in zip(paths, again, strict=True):
        assert first.name == second.name
        assert first.read_bytes() == second.read_bytes(), first.name


def test_table_sorted_with_pareto_significance_and_recommendation(judged: Any) -> None:
    out, _, data = judged
    md = (out / "report.md").read_text(encoding="utf-8")
    rows = _table(md)
    assert len(rows) == len(data["candidates"])
    keys = [(-float(r["ndcg@10"]), float(r["p99 ms"])) for r in rows]
    assert keys == sorted(keys)  # best first, the faster of a tie first
    marked = {r["candidate"] for r in rows if r["Pareto"] == "✓"}
    assert marked == {c["id"] for c in data["candidates"] if c["pareto"]}  # the brute force
    assert "Pareto-optimal" not in md  # pick's flags and the recomputed front agree
    assert 0 < len(marked) < len(rows)  # the grid has dominated candidates too
    best = max(data["candidates"], key=lambda c: c["metrics"]["ndcg@10"])
    top = rows[0]
    assert top["candidate"] == best["id"] and top[""] == "★"
    assert top["vs best"] == "best (baseline)"
    for raw in data["candidates"]:
        row = next(r for r in rows if r["candidate"] == raw["id"])
        sig = raw["significance"]
        if raw is not best:
            verdict = "significant" if sig["significant"] else "not significant"
            assert row["vs best"] == f"{sig['delta']:+.4f}, p={sig['p_value']:.3g}, {verdict}"
        assert row["p99 ms"] == (f"{raw['latency_ms_p99']:.2f}" if raw["latency_ms_p99"] < 10
                                 else f"{raw['latency_ms_p99']:.1f}")  # fmt: skip
        assert row["bytes/doc"] == f"{raw['bytes_per_doc']:,.0f}"
    assert SIG_TEST in md
    assert "not significant" in md and ", significant" in md


def test_recommendation_data_costs_and_command(judged: Any) -> None:
    out, _, data = judged
    md = (out / "report.md").read_text(encoding="utf-8")
    rec = data["recommendation"]
    assert f"Recommended configuration: {rec['candidate'].replace('|', '|')}" in md
    for line in (
        f"- Model: {rec['model']['name']} — {rec['model']['reason']}",
        f"- Dimension: {rec['dimension']['dim']} {rec['dimension']['precision']} — ",
        f"- Mode: {rec['mode']['mode']} — ",
        "- Query prefix: none — the model has none",
        "- label 50 real queries",
        "- Matryoshka truncation below 64 dims refused",
    ):
        assert line in md, line
    assert "Judged evaluation" in md and "PROXY" not in md
    assert data["data"]["subsample_note"] in md
    assert data["command"] in md
    assert "20 min 34 s" in md  # elapsed_s 1234.5
    per_query = 0.02 * 12.0
    corpus_once = 0.02 * 1_000_000 * 240.1 / 1e6
    assert f"${per_query:.2f} per 1M queries (at 12.0 tokens per query)" in md
    assert f"embedding the corpus once: ${corpus_once:,.2f}" in md


def test_proxy_no_recommendation_and_skipped_plots(proxy: Any) -> None:
    out, paths = proxy
    md = (out / "report.md").read_text(encoding="utf-8")
    page = (out / "report.html").read_text(encoding="utf-8")
    for text in (md, page):
        assert "PROXY EVALUATION" in text
        assert "each document&#x27;s title is its query" in text or (
            "each document's title is its query" in text
        )
        assert "NO RECOMMENDATION" in text and "UNMET BUDGETS" in text
    assert md.count("each document's title is its query") == 1
    assert "- 300 of 1109 queries, to finish within --time-budget-min 30" in md
    assert "latency_ms, limit 5, best 10, over by 5" in md
    assert "(PROXY evaluation)" in md.splitlines()[0]
    # one dimension per model and no quantized twin: those two plots are skipped, with why
    assert [p.name for p in paths[2:]] == [PLOT_FILES[0], PLOT_FILES[1], PLOT_FILES[4]]
    assert not (out / "matryoshka.png").exists() and not (out / "retention.png").exists()
    assert "No model was measured at more than one dimension" in md
    assert "No int8 or binary candidate has a float32 twin" in md
    assert page.count("<img ") == 3
    rows = _table(md)
    assert {r["candidate"] for r in rows if r["Pareto"] == "✓"} == SMALL_FRONT
    assert all(r["budgets"] == "latency_ms +15" for r in rows)


def test_pareto_front_hand_computed() -> None:
    data = pick(_small())
    assert {c["id"] for c in data["candidates"] if c["pareto"]} == SMALL_FRONT  # the builder
    study = load_results([data])
    assert pareto_front(study.candidates) == SMALL_FRONT
    assert {c.id for c in study.candidates if c.pareto} == SMALL_FRONT
    assert not any("Pareto-optimal" in note for note in study.notes)


def test_a_pick_front_that_disagrees_is_recomputed_and_said() -> None:
    data = pick(_small())
    data["candidates"][5]["pareto"] = True  # F is dominated by A
    study = load_results([data], ["p.json"])
    assert {c.id for c in study.candidates if c.pareto} == SMALL_FRONT
    assert "p.json marks 5 candidates as Pareto-optimal, recomputed here: 4" in study.notes[-1]


def test_strings_are_escaped(proxy: Any) -> None:
    out, _ = proxy
    page = (out / "report.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert SCRIPT_NAME not in page and SCRIPT_NAME not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own image counter


def test_eval_results_merge_with_a_pick(tmp_path: Path) -> None:
    dense = eval_result("mini", 384, "float32", "dense", 0.611)
    hybrid = eval_result("mini", 384, "float32", "hybrid", 0.655)
    paths = render_report([pick(_small()), dense, hybrid], tmp_path, labels=["p", "d", "h"])
    md = paths[0].read_text(encoding="utf-8")
    rows = {r["candidate"]: r for r in _table(md)}
    assert len(rows) == len(_small()) + 2
    assert rows["mini|384|float32|hybrid"]["bytes/doc"] == f"{200_000 / 100:,.0f}"
    assert rows["mini|384|float32|dense"]["bytes/doc"] == "—"
    assert rows["mini|384|float32|dense"]["vs best"] == "—"
    assert "d records no document count" in md
    assert "h: an `embedstack eval` result" in md


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([pick(_small()), pick(_small(), evaluation="proxy")], "judged and proxy"),
        ([pick(_small()), pick(_small(), name="nfcorpus")], "datasets"),
        (
            [eval_result("m", 8, "float32", "dense", 0.5), pick(_small(), name="nfcorpus")],
            "datasets",
        ),  # fmt: skip
        ([], "no results"),
        (
            [
                {"spearman": 0.8, "n_pairs": 9, "config": {"model": "m", "dim": 8}},
                eval_result("m", 8, "float32", "dense", 0.5),
            ],
            "tasks",
        ),  # fmt: skip
        ([{"kind": "something.else"}], "not an embedstack pick.json"),
        ([[1, 2]], "expected a JSON object"),
        ([dict(pick(_small()), format_version=2)], "format_version"),
        ([dict(pick(_small()), candidates=[])], "non-empty list"),
        ([dict(pick(_small()), recommendation={"candidate": "nope"})], "not one of its"),
    ],
)
def test_refused_inputs(inputs: list[Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_results(inputs)


def test_invalid_candidate_fields_name_the_key() -> None:
    bad = pick(_small())
    bad["candidates"][2]["metrics"]["ndcg@10"] = "high"
    with pytest.raises(InvalidInput, match=r"candidates\[2\]\.metrics\.ndcg@10 must be a number"):
        load_results([bad], ["x.json"])
    bad = pick(_small())
    bad["candidates"][0]["main_metric"] = "map@5"
    with pytest.raises(InvalidInput, match="not one of its metrics"):
        load_results([bad])


def test_read_result_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        read_result(tmp_path / "missing.json")
    (tmp_path / "a.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInput, match="invalid JSON at line 1"):
        read_result(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"ndcg@10": NaN}', encoding="utf-8")
    with pytest.raises(InvalidInput, match="NaN is not valid JSON"):
        read_result(tmp_path / "b.json")


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "d.json", tmp_path / "h.json"
    first.write_text(json.dumps(eval_result("mini", 384, "int8", "dense", 0.6)), "utf-8")
    second.write_text(json.dumps(eval_result("mini", 384, "float32", "dense", 0.61)), "utf-8")
    out = tmp_path / "out"
    assert run(["report", str(first), str(second), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[:2] == [str(out / "report.md"), str(out / "report.html")]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "mini\\|384\\|int8\\|dense" in md
    assert f"{100 * 0.6 / 0.61:.1f}%" in md  # int8 retention against its float32 twin


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "{missing}", "--out", "{out}"], "no such file"),
        (["report", "{bad}", "--out", "{out}"], "invalid JSON"),
        (["report", "{judged}", "{proxy}", "--out", "{out}"], "judged and proxy"),
        (["report", "{judged}", "--outt", "{out}"], "No such option"),
        (["report", "{judged}"], "Missing option '--out'"),
        (["reprot", "{judged}"], "No such command"),
        (["report", "{judged}", "--out", "{judged}"], "not a folder"),
    ],
)
def test_cli_errors_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    names = {"missing": "missing.json", "bad": "bad.json", "judged": "j.json", "proxy": "p.json"}
    files = {key: tmp_path / name for key, name in names.items()} | {"out": tmp_path / "o"}
    files["bad"].write_text("[1,", encoding="utf-8")
    files["judged"].write_text(json.dumps(pick(_small())), encoding="utf-8")
    files["proxy"].write_text(json.dumps(pick(_small(), evaluation="proxy")), encoding="utf-8")
    code = run([a.format(**{k: str(v) for k, v in files.items()}) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not files["out"].exists()


def test_import_stays_light() -> None:
    code = ("import sys, embedstack.eval.report, embedstack.cli.report; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_real_eval_outputs_merge(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON `embedstack eval` writes today (dense, int8 and bm25) is read as it is."""
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs = ["cats purr on warm mats", "markets fell on rate fears", "the cat chased a mouse"]
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "cat mouse"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td2\t1\n")
    files = []
    for mode, precision in (("dense", "float32"), ("dense", "int8"), ("bm25", "float32")):
        files.append(str(tmp_path / f"{mode}-{precision}.json"))
        argv = ["eval", str(root), "--model", hash_model, "--mode", mode, "--json", files[-1]]
        assert run([*argv, "--precision", precision, "--index", str(tmp_path / "ix")]) == 0
    assert run(["report", *files, "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    rows = {r["candidate"]: r for r in _table((tmp_path / "out" / "report.md").read_text())}
    assert set(rows) == {f"{hash_model}|64|float32|dense", f"{hash_model}|64|int8|dense",
                         "bm25"}  # fmt: skip
    assert rows[f"{hash_model}|64|float32|dense"]["bytes/doc"] == f"{64 * 4:,.0f}"
    assert rows["bm25"]["bytes/doc"] != "—"


def test_sts_results_get_a_matryoshka_curve_and_no_latency_plot(tmp_path: Path) -> None:
    results = [
        {"spearman": value, "n_pairs": 1379, "config": {"model": "mini", "dim": dim}}
        for dim, value in ((384, 0.82), (256, 0.81), (128, 0.79))
    ]
    paths = render_report(results, tmp_path)
    assert [p.name for p in paths[2:]] == ["matryoshka.png"]
    md = paths[0].read_text(encoding="utf-8")
    assert "main metric: spearman" in md
    assert "No candidate has a p99 latency" in md
    assert [r["candidate"] for r in _table(md)] == [
        f"mini|{d}|float32|sts" for d in (384, 256, 128)
    ]


def test_api_line_uses_the_costs_a_pick_computed() -> None:
    from embedstack.eval.report.derived import api_lines

    data = pick(_small())
    data["prices"]["api"][0].update(tokens_per_query=20.0, usd_per_1m_queries=0.4,
                                    usd_to_embed_corpus=7.0)  # fmt: skip
    (line,) = api_lines(load_results([data]))
    assert (line.usd_per_1m_queries, line.corpus_usd, line.tokens_per_query) == (0.4, 7.0, 20.0)
    del (
        data["prices"]["api"][0]["usd_per_1m_queries"],
        data["prices"]["api"][0]["usd_to_embed_corpus"],
    )
    (line,) = api_lines(load_results([data]))
    assert line.usd_per_1m_queries == pytest.approx(0.02 * 20.0)
    assert line.corpus_usd == pytest.approx(0.02 * 1_000_000 * 240.1 / 1e6)


def test_pareto_front_unknowns() -> None:
    """An unknown p99 or size counts as the worst value; no main metric, never on the front."""
    from dataclasses import replace

    (base,) = load_results([pick([candidate("m", 8, "float32", "dense", 0.5, 10.0)])]).candidates
    fast = replace(base, id="fast", latency_ms_p99=5.0)
    unknown = replace(base, id="unknown", latency_ms_p99=None, metrics={"ndcg@10": 0.6})
    unscored = replace(base, id="unscored", latency_ms_p99=1.0, metrics={"ndcg@10": None})
    assert pareto_front([base, fast]) == {"fast"}
    assert pareto_front([fast, unknown, unscored]) == {"fast", "unknown"}
    assert pareto_front([fast, replace(unknown, metrics={"ndcg@10": 0.5})]) == {"fast"}
