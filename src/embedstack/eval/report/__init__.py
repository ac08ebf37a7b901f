"""``embedstack report``: pick.json and eval results as Markdown + HTML with plots.

:func:`render_report` merges several results (pick.json files of ``embedstack pick`` and
JSON reports of ``embedstack eval``) into one candidate table, with the recommendation,
significance against the best candidate, costs, and five matplotlib figures: quality vs p99
latency (Pareto front marked, recommendation starred), quality vs bytes per document, the
Matryoshka curve per model, int8/binary retention, and cost per 1M queries.
:func:`render_pick` renders one pick. Both write ``report.md``, a self-contained
``report.html`` (figures embedded, no external URL) and the PNG files; the same input gives
byte-identical files.

Example:
    >>> from embedstack.eval.report import render_pick  # doctest: +SKIP
    >>> render_pick(json.loads(Path("pick.json").read_text()), Path("out"))  # doctest: +SKIP
    [PosixPath('out/report.md'), PosixPath('out/report.html'), ...]
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.eval.report.load import Study, load_results, read_result
from embedstack.eval.report.parse import PICK_KIND

__all__ = ["load_results", "read_result", "render_pick", "render_report", "render_study"]


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir}: not a folder (the report writes several files)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create {out_dir}: {exc.strerror}") from None
    return out_dir


def render_study(study: Study, out_dir: Path, *, title: str) -> list[Path]:
    """Write ``report.md``, ``report.html`` and the figures of ``study`` into ``out_dir``.

    Returns:
        The paths written: ``report.md``, ``report.html``, then the PNG files.
    """
    from embedstack.eval.report.content import build
    from embedstack.eval.report.html import render_html
    from embedstack.eval.report.markdown import render_markdown
    from embedstack.eval.report.plots import make_plots, write_plots

    out_dir = _out_dir(out_dir)
    plots = make_plots(study)
    blocks = build(study, plots, title)
    md, page = out_dir / "report.md", out_dir / "report.html"
    pngs = write_plots(plots, out_dir)
    _write_atomic(md, render_markdown(blocks).encode("utf-8"))
    _write_atomic(page, render_html(blocks, title).encode("utf-8"))
    return [md, page, *pngs]


def render_report(
    results: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    title: str | None = None,
    labels: Sequence[str] = (),
) -> list[Path]:
    """Merge pick.json and ``embedstack eval`` results into one report in ``out_dir``.

    Args:
        results: parsed JSON objects (see :func:`~embedstack.eval.report.load.load_results`).
        out_dir: created when missing; ``report.md``, ``report.html`` and the PNG files are
            replaced.
        title: the report's title (default: names the dataset).
        labels: names of the inputs for messages (file names).

    Returns:
        The paths written: ``report.md``, ``report.html``, then the PNG files.

    Raises:
        InvalidInput: invalid inputs, or inputs that cannot share a report (judged with
            proxy evaluations, different datasets or tasks).
        MissingDependency: matplotlib is not installed (``pip install 'embedstack[plot]'``).
    """
    study = load_results(results, labels)
    kind = "proxy evaluation" if study.evaluation == "proxy" else "judged evaluation"
    return render_study(
        study, out_dir, title=title or f"embedstack report: {study.dataset} ({kind})"
    )


def render_pick(pick: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Render one pick.json (the ``embedstack pick`` output) as its report in ``out_dir``.

    Raises:
        InvalidInput: ``pick`` is not a valid pick.json.
    """
    if not isinstance(pick, Mapping) or pick.get("kind") != PICK_KIND:
        raise InvalidInput(f"render_pick needs a pick.json object (kind {PICK_KIND!r})")
    study = load_results([pick], ["pick.json"])
    kind = "PROXY evaluation" if study.evaluation == "proxy" else "judged evaluation"
    return render_study(study, out_dir, title=f"embedstack pick: {study.dataset} ({kind})")
