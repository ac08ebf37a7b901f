"""Metadata filters (:mod:`embedstack.index.filters`) compiled to PostgreSQL JSONB SQL with
the local index's semantics, SQLite's JSON1 quirks included, so a filter selects the same
documents in both:

* a key addresses nested objects only (``"a.b"``; never an array position): a strict
  SQL/JSON path ``strict $."a"."b"``, missing (SQL NULL) when any step is absent;
* equality and ``$in`` match the value itself, or any element of an array value, or any
  member value of an object value (SQLite ``json_each``); numbers compare as numbers, and
  ``true`` / ``false`` equal ``1`` / ``0`` (SQLite's JSON booleans are integers); ``null``
  matches only a null value itself, not a null element;
* ranges compare numbers with numbers and strings with strings in code-point order
  (``COLLATE "C"``, SQLite's BINARY); anything else is false, a missing key unknown (NULL);
* SQL's three-valued logic is kept clause by clause (``$ne`` / ``$nin`` of a missing key
  that tests ``null`` stays unknown, as in SQLite).

Every value is a bound parameter. Validation is the local compiler's
(:func:`embedstack.index.filters.compile_filter` runs first), so errors are identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embedstack.index.filters import compile_filter

__all__ = ["compile_pg", "key_path"]

_RANGE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def key_path(key: str) -> str:
    """The strict SQL/JSON path of a (validated) metadata key: ``a.b`` → ``strict $."a"."b"``."""
    return "strict $" + "".join('."' + p.replace("\\", "\\\\") + '"' for p in key.split("."))


class _Compiler:
    def __init__(self, column: str) -> None:
        self.column = column
        self.params: list[Any] = []

    def value(self, key: str) -> str:
        self.params.append(key_path(key))
        return f"jsonb_path_query_first({self.column}, %s::jsonpath, '{{}}'::jsonb, true)"

    def member(self, key: str, values: list[Any]) -> str:
        if not values:
            return "false"
        ints = [int(v) for v in values if isinstance(v, bool | int)]
        floats = [float(v) for v in values if isinstance(v, float)]
        strs = [v for v in values if isinstance(v, str)]
        parts = []
        if ints or floats or strs:
            v = self.value(key)
            self.params += [ints, floats, ints, floats, strs]
            num = "(e #>> '{}')"
            boolean = "(CASE WHEN e = 'true'::jsonb THEN 1 ELSE 0 END)"
            parts.append(
                f"EXISTS (SELECT 1 FROM (SELECT {v} AS v) x, jsonb_array_elements(CASE "
                "jsonb_typeof(x.v) WHEN 'array' THEN x.v WHEN 'object' THEN "
                "jsonb_path_query_array(x.v, '$.*') ELSE jsonb_build_array(x.v) END) e "
                f"WHERE (jsonb_typeof(e) = 'number' AND ({num}::numeric = ANY(%s::numeric[]) "
                f"OR {num}::float8 = ANY(%s::float8[]))) "
                f"OR (jsonb_typeof(e) = 'boolean' AND ({boolean} = ANY(%s::numeric[]) "
                f"OR {boolean} = ANY(%s::float8[]))) "
                f"OR (jsonb_typeof(e) = 'string' AND {num} = ANY(%s::text[])))"
            )
        if any(v is None for v in values):
            parts.append(f"jsonb_typeof({self.value(key)}) = 'null'")
        return "(" + " OR ".join(parts) + ")"

    def field(self, key: str, cond: object) -> str:
        if not isinstance(cond, Mapping):
            return self.member(key, [cond])
        clauses = []
        for op, value in cond.items():
            if op in ("$eq", "$ne"):
                sql = self.member(key, [value])
                sql = f"NOT {sql}" if op == "$ne" else sql
            elif op in ("$in", "$nin"):
                sql = self.member(key, list(value))
                sql = f"NOT {sql}" if op == "$nin" else sql
            elif op == "$exists":
                sql = f"({self.value(key)} IS {'NOT ' if value else ''}NULL)"
            else:
                kind = "string" if isinstance(value, str) else "number"
                as_type = {str: ' COLLATE "C"', float: "::float8"}.get(type(value), "::numeric")
                typ = self.value(key)  # parameters in the order of the SQL text
                text = f"({self.value(key)} #>> '{{}}')"
                self.params.append(value)
                typ2 = self.value(key)
                sql = (
                    f"(CASE jsonb_typeof({typ}) WHEN '{kind}' THEN {text}{as_type} "
                    f"{_RANGE[op]} %s ELSE jsonb_typeof({typ2}) = '{kind}' END)"
                )
            clauses.append(sql)
        return "(" + " AND ".join(clauses) + ")"

    def compile(self, flt: Mapping[str, Any]) -> str:
        clauses = []
        for key, cond in flt.items():
            if key in ("$and", "$or"):
                joiner = " OR " if key == "$or" else " AND "
                clauses.append("(" + joiner.join(self.compile(sub) for sub in cond) + ")")
            else:
                clauses.append(self.field(key, cond))
        return "(" + " AND ".join(clauses) + ")" if clauses else "true"


def compile_pg(flt: Mapping[str, Any], column: str = "d.metadata") -> tuple[str, list[Any],
                                                                           list[str]]:  # fmt: skip
    """Compile a filter to a boolean SQL expression over the JSONB ``column``.

    Returns:
        ``(sql, params, keys)``: the expression with ``%s`` placeholders, its parameters,
        and the metadata keys it references (to check that some document has them).

    Raises:
        InvalidInput: as :func:`embedstack.index.filters.compile_filter`.

    Example:
        >>> sql, params, keys = compile_pg({"year": {"$gte": 2020}})
        >>> keys, params[-1]
        (['year'], 2020)
    """
    _, _, keys = compile_filter(flt)  # validation, and the local index's error messages
    c = _Compiler(column)
    return c.compile(flt), c.params, keys
