"""Every ```python block of README.md runs, so the README cannot drift from the code.

The blocks run in order in one namespace, as a reader would paste them into one Python
session, in a temporary working folder. The models are the README's own (the bundled
all-MiniLM-L6-v2, exported once per test session); the reranker folders the README names
(``path/to/reranker``, ``./reranker``) hold a tiny random-weight cross-encoder built here.
Printed outputs shown as ``# comments`` are checked against what the block really prints.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shutil
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@dataclass
class Block:
    heading: str  # the "## ..." section the block sits in
    line: int  # README line of the block's first line of code
    source: str


@dataclass
class Outcome:
    stdout: str = ""
    value: Any = None  # the value of a block ending in an expression, as a REPL shows it
    error: str | None = None  # the traceback, when the block raised
    namespace: dict[str, Any] = field(default_factory=dict)  # the names after the block ran


def readme_blocks(text: str) -> list[Block]:
    blocks, heading, current, start = [], "", None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        if current is None:
            if line.startswith("## "):
                heading = line[3:].strip()
            elif line.strip() == "```python":
                current, start = [], number + 1
        elif line.strip() == "```":
            blocks.append(Block(heading, start, "\n".join(current) + "\n"))
            current = None
        else:
            current.append(line)
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def run_block(block: Block, namespace: dict[str, Any]) -> Outcome:
    """Run a block in ``namespace``; a final expression is evaluated and kept, as in a REPL.
    Tracebacks point at README lines."""
    tree = ast.parse(block.source)
    ast.increment_lineno(tree, block.line - 1)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    outcome = Outcome()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(tree, str(README), "exec"), namespace)
            if last is not None:
                expression = ast.Expression(last.value)
                outcome.value = eval(compile(expression, str(README), "eval"), namespace)
    except Exception:
        outcome.error = traceback.format_exc()
    outcome.stdout = out.getvalue()
    outcome.namespace = dict(namespace)
    return outcome


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Outcome]]:
    from test_rerank import SENTENCES, build_tiny_classifier

    folder = tmp_path_factory.mktemp("readme")
    build_tiny_classifier(folder / "path" / "to" / "reranker", SENTENCES)
    shutil.copytree(folder / "path" / "to" / "reranker", folder / "reranker")
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        outcomes = [run_block(block, namespace) for block in BLOCKS]
    yield outcomes
    index = namespace.get("index")
    if index is not None and hasattr(index, "close"):
        index.close()


def _comment(source: str, code: str) -> str:
    """The ``# comment`` on the line of ``source`` that contains ``code``."""
    for line in source.splitlines():
        if code in line and "#" in line:
            return line.split("#", 1)[1].strip()
    raise AssertionError(f"no commented line with {code!r} in the block")


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d*(?:e-?\d+)?", text)]


# --- what each block prints, checked against its comments -------------------------------------


def check_quickstart(block: Block, outcome: Outcome) -> None:
    shape_line, scores_line = outcome.stdout.splitlines()
    # print(docs.shape, docs.dtype)   # (2, 384) float32, rows L2-normalized
    assert _comment(block.source, "docs.dtype").startswith(shape_line), shape_line
    docs = outcome.namespace["docs"]
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    # print(query @ docs.T)   # [[0.58 0.02]]  cosine = dot product
    shown = _numbers(_comment(block.source, "query @ docs.T").split("  ")[0])
    printed = [round(x, 2) for x in _numbers(scores_line)]
    assert printed == shown, f"the block prints {scores_line!r}; the README shows {shown}"


def check_index(block: Block, outcome: Outcome) -> None:
    # for hit in index.search(..., mode="hybrid", filter={"year": {"$gte": 2020}}):
    #     print(hit.doc_id, hit.score, hit.ranks)   # per-retriever ranks and scores
    hit = outcome.namespace["hit"]
    assert outcome.stdout.splitlines() == [f"{hit.doc_id} {hit.score} {hit.ranks}"]
    assert hit.doc_id == "d1"  # the filter keeps d1 only: d2 has no year
    assert set(hit.ranks) == {"dense", "bm25"}
    assert hit.score == pytest.approx(sum(1 / (60 + r) for r in hit.ranks.values()))


def check_cross_encoder(block: Block, outcome: Outcome) -> None:
    # reranker.rerank("do cats purr?", ["Dogs bark.", "Cats purr."], top_n=1)   # [(1, 0.97)]
    # A random tiny model cannot give the README's values: check their shape and types.
    shown = ast.literal_eval(_comment(block.source, "reranker.rerank"))
    value = outcome.value
    assert isinstance(value, list) and len(value) == len(shown) == 1
    (index, score), ((shown_index, shown_score),) = value[0], shown
    assert type(index) is type(shown_index) and index in (0, 1)
    assert isinstance(score, float) and isinstance(shown_score, float)
    assert 0.0 <= score <= 1.0  # sigmoid scores, as the README's 0.97


def check_pipelines(block: Block, outcome: Outcome) -> None:
    # result = three_stage.trace(index, "why do cats purr")   # hits + per-stage timings
    hits, result = outcome.namespace["hits"], outcome.namespace["result"]
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in hits]
    assert hits and hits[0].doc_id == "d1"
    assert "total" in result.timings and len(result.timings) > 1
    assert all(seconds >= 0 for seconds in result.timings.values())


CHECKS: dict[str, Callable[[Block, Outcome], None]] = {
    "Quickstart": check_quickstart,
    "Index": check_index,
    "Sparse, late interaction and reranking": check_cross_encoder,
    "Pipelines": check_pipelines,
}

# Blocks that cannot run as written, each with the README fix it needs (strict: once the
# README is fixed the test passes, fails as XPASS, and the mark must go). None today.
XFAIL: dict[str, str] = {}


def _params() -> list[Any]:
    params = []
    for number, block in enumerate(BLOCKS):
        marks = []
        if block.heading in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[block.heading]))
        name = re.sub(r"\W+", "-", block.heading.lower()).strip("-")
        params.append(pytest.param(number, marks=marks, id=f"{number}-{name}-line{block.line}"))
    return params


@pytest.mark.parametrize("number", _params())
def test_readme_block(session: list[Outcome], number: int) -> None:
    block, outcome = BLOCKS[number], session[number]
    assert outcome.error is None, f"README line {block.line}:\n{outcome.error}"
    check = CHECKS.get(block.heading)
    if check is not None:
        check(block, outcome)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 4
    assert all(block.source.strip() for block in BLOCKS)


def test_every_block_that_shows_output_is_checked() -> None:
    """A block with a printed or shown value (a ``# comment`` after code) needs a check here."""
    for block in BLOCKS:
        shows = "print(" in block.source or re.search(r"#\s*[\[(]", block.source)
        if shows:
            assert block.heading in CHECKS, f"add a check for README line {block.line}"


def test_block_runner_reports_failures_and_values(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    ok = run_block(Block("x", 10, "a = 2\nprint(a * 3)\na + 1\n"), namespace)
    assert (ok.stdout, ok.value, ok.error) == ("6\n", 3, None)
    bad = run_block(Block("x", 20, "b = a\nundefined_name\n"), namespace)
    assert bad.error is not None and "NameError" in bad.error and "line 21" in bad.error
