"""embedstack's metadata filters (:mod:`embedstack.index.filters`) as Milvus boolean
expressions, with the local index's semantics.

Milvus evaluates JSON paths differently from SQLite in four ways, each handled here:

* **Arrays.** ``meta["tag"] == "a"`` does not look inside arrays, and
  ``json_contains(meta["tag"], "a")`` looks only inside arrays, so equality (``$eq``,
  ``$in``, ``$ne``, ``$nin``) is the OR of both, as MongoDB and the local index match
  ``{"tag": "a"}`` against ``tag: ["a", "b"]``.
* **Missing keys.** A comparison on a missing key is *unknown*, and ``not`` of unknown is
  not true: ``not (meta["y"] == 1)`` skips documents without ``y``. ``$ne`` and ``$nin``
  (true on a missing key in the local index) therefore add ``not (exists meta["y"])``.
* **JSON null.** Milvus treats ``"y": null`` as a missing key (``exists`` is false, ``is
  null`` also matches missing keys), while the local index tells them apart. Each stored
  row carries ``marks``: a JSON list naming the paths (outside arrays) whose value is null
  (``"null:[\\"y\\"]"``) or a boolean (``"bool:[\\"y\\"]"``), computed by :func:`marks`
  at write time; ``{"y": None}`` and ``$exists`` consult it.
* **Booleans in ranges.** Milvus compares ``true`` as the number 1 (``meta["y"] < 5``
  matches ``y: true``); SQLite's ``json_type`` does not, so a numeric range excludes the
  ``bool:`` paths. (Equality is alike on both: ``{"y": True}`` matches ``y: 1`` in both,
  because SQLite stores JSON true as the integer 1.)

What stays different (documented in ``docs/architecture.md``, tested in
``tests/test_milvus_filters.py``): equality on a key holding an *object* matches the
object's direct values in the local index (SQLite ``json_each`` iterates an object), and
never in Milvus. (Keys holding a backslash cannot be addressed in the local index's JSON
paths; Milvus addresses them.) A filter whose expression exceeds :data:`MAX_EXPR_BYTES`
raises :class:`FilterNotExpressible`.

Example:
    >>> print(to_expr({"lang": "en"}))
    ((meta["lang"] == "en" or json_contains(meta["lang"], "en")))
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.index.filters import LOGICAL, compile_filter

__all__ = ["MAX_EXPR_BYTES", "FilterNotExpressible", "exists_expr", "marks", "to_expr"]

#: Milvus rejects longer expressions (its default ``proxy.maxExprLength`` is larger, but a
#: filter of this size is a list of ids in disguise; pass fewer values).
MAX_EXPR_BYTES = 1 << 20
_RANGE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class FilterNotExpressible(InvalidInput):
    """A valid embedstack filter that the Milvus backend cannot evaluate with the local
    index's semantics; the message says why and what to do instead."""


def _lit(value: Any) -> str:
    """A Milvus literal: JSON's string escapes, ``true``/``false``, numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0"  # compile_filter refuses inf/nan
    return json.dumps(value, ensure_ascii=False)


def _path(col: str, key: str) -> str:
    return col + "".join(f"[{_lit(part)}]" for part in key.split("."))


def _mark(kind: str, parts: list[str]) -> str:
    return f"{kind}:{json.dumps(parts, ensure_ascii=False)}"


def marks(metadata: Mapping[str, Any]) -> list[str]:
    """The ``marks`` of a metadata object: ``"null:[path]"`` and ``"bool:[path]"`` for every
    null or boolean value reached through objects only (arrays are not entered), the path
    as a JSON list of keys, so ``{"a.b": None}`` and ``{"a": {"b": None}}`` differ.

    Example:
        >>> marks({"n": None, "ok": True, "a": {"b": None}, "tags": [None, True]})
        ['null:["n"]', 'bool:["ok"]', 'null:["a", "b"]']
    """
    return list(_walk(metadata, []))


def _walk(obj: Mapping[str, Any], prefix: list[str]) -> Iterator[str]:
    for key, value in obj.items():
        parts = [*prefix, str(key)]
        if value is None:
            yield _mark("null", parts)
        elif isinstance(value, bool):
            yield _mark("bool", parts)
        elif isinstance(value, Mapping):
            yield from _walk(value, parts)


def _has_mark(marks_col: str, kind: str, key: str) -> str:
    return f"json_contains({marks_col}, {_lit(_mark(kind, key.split('.')))})"


def exists_expr(key: str, col: str, marks_col: str) -> str:
    """True where metadata key ``key`` is present, null values included (as SQLite's
    ``json_type(...) IS NOT NULL``)."""
    return f"(exists {_path(col, key)} or {_has_mark(marks_col, 'null', key)})"


def _member(key: str, values: list[Any], col: str, marks_col: str) -> str:
    """The value at ``key`` (or an element of the array there) is one of ``values``."""
    path = _path(col, key)
    parts = [f"{path} == {_lit(v)} or json_contains({path}, {_lit(v)})"
             for v in values if v is not None]  # fmt: skip
    if any(v is None for v in values):
        parts.append(_has_mark(marks_col, "null", key))
    return "(" + " or ".join(parts) + ")" if parts else "false"


def _not_member(key: str, values: list[Any], col: str, marks_col: str) -> str:
    """The complement of :func:`_member`, true on a missing key (Milvus's ``not`` is not:
    it drops rows where the inner comparison is unknown), except when ``values`` holds None:
    the local index's SQL is then unknown, so false, on a missing key too."""
    path = _path(col, key)
    present = [v for v in values if v is not None]
    clauses = []
    if present:
        eq = " or ".join(f"{path} == {_lit(v)}" for v in present)
        clauses.append(f"(not (exists {path}) or not ({eq}))")
        clauses += [f"not json_contains({path}, {_lit(v)})" for v in present]
    if len(present) < len(values):  # SQLite: NOT (... OR NULL) is unknown on a missing key
        clauses.append(f"exists {path}")
    return "(" + " and ".join(clauses) + ")" if clauses else "true"


def _field(key: str, cond: object, col: str, marks_col: str) -> str:
    if not isinstance(cond, Mapping):
        return _member(key, [cond], col, marks_col)
    clauses = []
    for op, value in cond.items():
        if op == "$eq":
            clauses.append(_member(key, [value], col, marks_col))
        elif op == "$ne":
            clauses.append(_not_member(key, [value], col, marks_col))
        elif op == "$in":
            clauses.append(_member(key, list(value), col, marks_col))
        elif op == "$nin":
            clauses.append(_not_member(key, list(value), col, marks_col))
        elif op == "$exists":
            ex = exists_expr(key, col, marks_col)
            clauses.append(ex if value else f"not {ex}")
        else:
            cmp = f"{_path(col, key)} {_RANGE[op]} {_lit(value)}"
            if not isinstance(value, str):  # numbers: SQLite's json_type excludes true/false
                cmp = f"({cmp} and not {_has_mark(marks_col, 'bool', key)})"
            clauses.append(cmp)
    return "(" + " and ".join(clauses) + ")"


def _compile(flt: Mapping[str, Any], col: str, marks_col: str) -> str:
    clauses = []
    for key, cond in flt.items():
        if key in LOGICAL:
            joiner = " or " if key == "$or" else " and "
            clauses.append("(" + joiner.join(_compile(s, col, marks_col) for s in cond) + ")")
        else:
            clauses.append(_field(key, cond, col, marks_col))
    return "(" + " and ".join(clauses) + ")" if clauses else "true"


def to_expr(flt: Mapping[str, Any], col: str = "meta", marks_col: str = "marks") -> str:
    """The Milvus expression of filter ``flt`` over JSON field ``col`` and marks field
    ``marks_col`` (see the module docstring).

    Raises:
        InvalidInput: the filter is invalid (the same errors, from the same checks, as the
            local index: :func:`~embedstack.index.filters.compile_filter`).
        FilterNotExpressible: the expression exceeds :data:`MAX_EXPR_BYTES`.
    """
    compile_filter(flt)  # validation: one set of rules and messages for every backend
    expr = _compile(flt, col, marks_col)
    if len(expr.encode("utf-8")) > MAX_EXPR_BYTES:
        raise FilterNotExpressible(
            f"the filter's Milvus expression is {len(expr.encode('utf-8'))} bytes, over "
            f"{MAX_EXPR_BYTES}: split the query or filter on a coarser metadata key"
        )
    return expr
