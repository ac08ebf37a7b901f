"""Read and write runs in the TREC format that ``trec_eval`` and ``pytrec_eval`` consume.

Each line is ``qid Q0 docid rank score tag``, separated by single spaces; within a query, lines
are sorted by score descending and ranks start at 1. Scores are written with ``repr`` so that
reading a run back gives exactly the floats that were written.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
    >>> write_trec_run({"q1": {"d2": 0.5, "d1": 0.9}}, path)
    >>> print(path.read_text(), end="")
    q1 Q0 d1 1 0.9 embedstack
    q1 Q0 d2 2 0.5 embedstack
    >>> read_trec_run(path)
    {'q1': {'d1': 0.9, 'd2': 0.5}}
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

from embedstack.errors import InvalidInput

__all__ = ["read_trec_run", "write_trec_run"]


def _check_token(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise InvalidInput(
            f"{what} {value!r} cannot be written to a TREC run: it must be a non-empty "
            "string without whitespace"
        )
    return value


def write_trec_run(
    run: Mapping[str, Mapping[str, float]],
    path: str | PathLike[str],
    tag: str = "embedstack",
) -> None:
    """Write a run as a TREC run file, atomically (temp file, fsync, rename).

    Queries appear in the run's order; documents by score descending, ties keeping the run's
    order (a stable sort).

    Args:
        run: ``{query_id: {doc_id: score}}``.
        path: Destination file; its folder must exist.
        tag: The run tag written in the last column.

    Raises:
        InvalidInput: An id or the tag is empty or holds whitespace, or a score is not a
            finite number.
    """
    _check_token(tag, "tag")
    lines: list[str] = []
    for qid, docs in run.items():
        _check_token(qid, "query id")
        rows: list[tuple[str, float]] = []
        for did, score in docs.items():
            _check_token(did, "doc id")
            try:
                value = float(score)
            except (TypeError, ValueError):
                raise InvalidInput(f"run[{qid!r}][{did!r}] = {score!r} is not a number") from None
            if not math.isfinite(value):
                raise InvalidInput(f"run[{qid!r}][{did!r}] = {score!r} is not finite")
            rows.append((did, value))
        rows.sort(key=lambda item: item[1], reverse=True)
        for rank, (did, value) in enumerate(rows, start=1):
            lines.append(f"{qid} Q0 {did} {rank} {value!r} {tag}\n")
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_trec_run(path: str | PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a TREC run file.

    Args:
        path: A file of ``qid Q0 docid rank score tag`` lines (any whitespace between fields).

    Returns:
        ``{query_id: {doc_id: score}}`` in file order. The rank column is not used, as in
        ``trec_eval``, which ranks by score.

    Raises:
        InvalidInput: The file is missing, a line does not have 6 fields, a score is not a
            finite number, or a (query, doc) pair repeats; the message names the line.
    """
    file = Path(path)
    run: dict[str, dict[str, float]] = {}
    try:
        handle = file.open(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{file}: file not found") from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise InvalidInput(
                    f"{file}:{lineno}: expected 6 fields (qid Q0 docid rank score tag), "
                    f"got {len(fields)}"
                )
            qid, _, did, _, raw_score, _ = fields
            try:
                score = float(raw_score)
            except ValueError:
                raise InvalidInput(
                    f"{file}:{lineno}: score {raw_score!r} is not a number"
                ) from None
            if not math.isfinite(score):
                raise InvalidInput(f"{file}:{lineno}: score {raw_score!r} is not finite")
            docs = run.setdefault(qid, {})
            if did in docs:
                raise InvalidInput(
                    f"{file}:{lineno}: document {did!r} appears twice for query {qid!r}"
                )
            docs[did] = score
    return run
