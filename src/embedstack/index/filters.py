"""Metadata filters: a small MongoDB-like dict syntax compiled to parameterized SQLite SQL.

Syntax::

    {"lang": "en"}                                   equality ($eq)
    {"year": {"$gte": 2020, "$lt": 2024}}            ranges: $gt $gte $lt $lte, and $ne
    {"tag": {"$in": ["a", "b"]}}                     membership: $in, $nin
    {"doi": {"$exists": True}}                       presence
    {"$or": [{...}, {...}]}, {"$and": [...]}         combinations; top-level keys are ANDed
    {"author.name": "Ada"}                           dots address nested objects

Equality and ``$in`` follow MongoDB on arrays: ``{"tag": "a"}`` matches ``tag: ["a", "b"]``.
Range operators compare numbers with numbers and strings with strings only (a string
``"2021"`` does not satisfy ``{"$gte": 2020}``). Every value is a bound SQL parameter, never
interpolated; keys become JSON paths, also bound.

Example:
    >>> sql, params, keys = compile_filter({"year": {"$gte": 2020}, "lang": "en"})
    >>> keys
    ['year', 'lang']
    >>> parse_filter_args(["lang=en", "year>=2020"])
    {'lang': 'en', 'year': {'$gte': 2020}}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from embedstack.errors import InvalidInput

__all__ = ["OPERATORS", "compile_filter", "json_path", "parse_filter_args"]

_RANGE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS: tuple[str, ...] = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                              "$exists")  # fmt: skip
LOGICAL: tuple[str, ...] = ("$and", "$or")
_KEY = re.compile(r"^[^\"$.\s][^\"\s]*$")
_MAX_DEPTH = 32
_COL = "docs.metadata"


def json_path(key: str) -> str:
    """The SQLite JSON path of a metadata key (``"a.b"`` → ``$."a"."b"``).

    Raises:
        InvalidInput: an empty key, one starting with ``$`` or ``.``, or containing quotes,
            whitespace or empty dotted parts.
    """
    if not isinstance(key, str) or not _KEY.match(key) or any(p == "" for p in key.split(".")):
        raise InvalidInput(
            f"invalid filter key {key!r}: use field names without quotes or spaces, dots for "
            "nesting, and no leading '$' (logical operators are $and, $or)"
        )
    return "$" + "".join(f'."{part}"' for part in key.split("."))


def _scalar(value: object, key: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"filter on {key!r}: {value!r} is not a finite number")
        return value
    raise InvalidInput(
        f"filter on {key!r}: values must be str, int, float, bool or None, got "
        f"{type(value).__name__}"
    )


def _member(path: str, values: list[Any]) -> tuple[str, list[Any]]:
    """Whether the value at ``path`` (or any element, for arrays) is one of ``values``."""
    if not values:
        return "0", []
    nulls = any(v is None for v in values)
    present = [v for v in values if v is not None]
    parts, params = [], []
    if present:
        marks = ", ".join("?" * len(present))
        parts.append(
            f"EXISTS (SELECT 1 FROM json_each({_COL}, ?) AS je WHERE je.type != 'null' "
            f"AND je.value IN ({marks}))"
        )
        params += [path, *[_sql_value(v) for v in present]]
    if nulls:
        parts.append(f"json_type({_COL}, ?) = 'null'")
        params.append(path)
    return "(" + " OR ".join(parts) + ")", params


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _field(key: str, cond: object) -> tuple[str, list[Any]]:
    path = json_path(key)
    if not isinstance(cond, Mapping):
        return _member(path, [_scalar(cond, key)])
    if not cond:
        raise InvalidInput(f"filter on {key!r}: empty operator object")
    clauses, params = [], []
    for op, value in cond.items():
        if op not in OPERATORS:
            raise InvalidInput(
                f"unknown filter operator {op!r} on {key!r}; operators are "
                f"{', '.join(OPERATORS)} (and {', '.join(LOGICAL)} to combine filters)"
            )
        if op in ("$eq", "$ne"):
            sql, p = _member(path, [_scalar(value, key)])
            sql = f"NOT {sql}" if op == "$ne" else sql
        elif op in ("$in", "$nin"):
            if not isinstance(value, list | tuple):
                raise InvalidInput(f"filter on {key!r}: {op} needs a list, got {value!r}")
            sql, p = _member(path, [_scalar(v, key) for v in value])
            sql = f"NOT {sql}" if op == "$nin" else sql
        elif op == "$exists":
            if not isinstance(value, bool):
                raise InvalidInput(f"filter on {key!r}: $exists needs true or false")
            sql, p = f"(json_type({_COL}, ?) IS {'NOT ' if value else ''}NULL)", [path]
        else:
            v = _scalar(value, key)
            if v is None or isinstance(v, bool):
                raise InvalidInput(f"filter on {key!r}: {op} needs a number or a string")
            kinds = "('text')" if isinstance(v, str) else "('integer', 'real')"
            sql = f"(json_type({_COL}, ?) IN {kinds} AND json_extract({_COL}, ?) {_RANGE[op]} ?)"
            p = [path, path, v]
        clauses.append(sql)
        params += p
    return "(" + " AND ".join(clauses) + ")", params


def _compile(flt: object, keys: list[str], depth: int) -> tuple[str, list[Any]]:
    if depth > _MAX_DEPTH:
        raise InvalidInput(f"filter nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(flt, Mapping):
        raise InvalidInput(f"a filter must be a dict, got {type(flt).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for key, cond in flt.items():
        if key in LOGICAL:
            if not isinstance(cond, list | tuple) or not cond:
                raise InvalidInput(f"{key} needs a non-empty list of filters")
            parts = [_compile(sub, keys, depth + 1) for sub in cond]
            joiner = " OR " if key == "$or" else " AND "
            clauses.append("(" + joiner.join(p[0] for p in parts) + ")")
            params += [x for p in parts for x in p[1]]
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidInput(
                f"unknown filter operator {key!r} at the top level; use {', '.join(LOGICAL)} to "
                f"combine filters, and {', '.join(OPERATORS)} inside a field"
            )
        else:
            sql, p = _field(key, cond)
            if key not in keys:
                keys.append(key)
            clauses.append(sql)
            params += p
    return ("(" + " AND ".join(clauses) + ")" if clauses else "1"), params


def compile_filter(flt: Mapping[str, Any]) -> tuple[str, list[Any], list[str]]:
    """Compile a filter dict to a SQL boolean expression over ``docs.metadata``.

    Returns:
        ``(sql, params, keys)``: the expression with ``?`` placeholders, its parameters in
        order, and the metadata keys it references (to check they exist).

    Raises:
        InvalidInput: unknown operators (the message lists them), bad keys or values.
    """
    keys: list[str] = []
    sql, params = _compile(flt, keys, 0)
    return sql, params, keys


_ARG = re.compile(r"^\s*([^=<>!\s]+?)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")
_IN = re.compile(r"^\s*(\S+)\s+(not\s+in|in)\s+(.*?)\s*$")
_ARG_OPS = {">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt", "!=": "$ne"}
_SYNTAX = (
    "use key=value, key!=value, key>=n, key>n, key<=n, key<n, 'key in a,b' or 'key not in a,b'"
)
_BARE_RANGE = re.compile(r"^\d[\w:.+-]*$")  # dates and versions: 2021-01-01, 2024-05-01T10:00


def _parse_value(raw: str) -> Any:
    """JSON if it parses (numbers, true/false/null, quoted strings, lists), else the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _bad(arg: str, why: str) -> InvalidInput:
    return InvalidInput(f"cannot parse filter {arg!r}: {why}; {_SYNTAX}")


def _condition(arg: str) -> tuple[str, Any]:
    """``(key, condition)`` of one command-line condition."""
    m = _IN.match(arg)
    if m is not None and not any(c in m.group(1) for c in "=<>!"):
        key, op, raw = m.groups()
        items = [item.strip() for item in raw.split(",")]
        if not raw or any(not item for item in items):
            raise _bad(arg, f"'{op}' needs a comma-separated list of values, e.g. {key} in a,b")
        values = [_parse_value(item) for item in items]
        return key, {"$nin" if op.startswith("not") else "$in": values}
    m = _ARG.match(arg)
    if m is None:
        raise _bad(arg, "no operator")
    key, op, raw = m.groups()
    if not raw:
        raise _bad(arg, f'no value after {op!r} (use {key}{op}"" for the empty string)')
    if raw[0] in "=<>!":
        hint = {"=>": ">=", "=<": "<="}.get(op + raw[0])
        better = f"; did you mean {key}{hint}{raw[1:]}?" if hint else ""
        raise _bad(arg, f"the value {raw!r} starts with an operator{better}")
    value = _parse_value(raw)
    if op == "=":
        return key, ({"$in": value} if isinstance(value, list) else value)
    if op in ("<", "<=", ">", ">=") and not (
        (isinstance(value, int | float) and not isinstance(value, bool))
        or (isinstance(value, str) and (raw.startswith('"') or _BARE_RANGE.match(raw)))
    ):
        raise _bad(
            arg,
            f"{op} needs a number, a date such as 2021-01-01, or a quoted string "
            f'({key}{op}"{raw}") to compare text',
        )
    return key, {_ARG_OPS[op]: value}


def parse_filter_args(args: Sequence[str]) -> dict[str, Any]:
    """Build a filter dict from command-line style conditions, ANDed together.

    ``key=value``, ``key!=value``, ``key>=n``, ``key>n``, ``key<=n``, ``key<n``,
    ``key in a,b`` (``$in``) and ``key not in a,b`` (``$nin``); values are read as JSON when
    they parse (``2020``, ``true``, ``["a","b"]``) and as plain strings otherwise.
    ``key=[...]`` (a JSON list) means ``$in``. A range needs a number, a date-like value
    (``2021-01-01``) or a quoted string, so a typo never silently matches nothing.

    Raises:
        InvalidInput: a condition that does not parse (``year=>2020``, ``year>=``,
            ``year>=abc``), naming it and the syntax.

    Example:
        >>> parse_filter_args(["tag=[\\"a\\",\\"b\\"]", "year<2024", "year>=2020"])
        {'tag': {'$in': ['a', 'b']}, 'year': {'$lt': 2024, '$gte': 2020}}
        >>> parse_filter_args(["lang in en,de"])
        {'lang': {'$in': ['en', 'de']}}
    """
    out: dict[str, Any] = {}
    for arg in args:
        if not isinstance(arg, str):
            raise InvalidInput(f"a filter condition must be a string, got {arg!r}")
        key, cond = _condition(arg)
        json_path(key)
        if key not in out:
            out[key] = cond
            continue
        prev = out[key]
        prev = prev if isinstance(prev, dict) else {"$eq": prev}
        new = cond if isinstance(cond, dict) else {"$eq": cond}
        if set(prev) & set(new):
            out.setdefault("$and", []).append({key: new})
        else:
            out[key] = {**prev, **new}
    return out
