"""The compact string form of a pipeline, e.g.
``bm25(top=100) + dense(top=100) -> rrf(k=60) -> rerank(top=20) -> top 10``.

Grammar (whitespace is free)::

    pipeline   := generators ("->" step)*
    generators := call ("+" call)*
    step       := call | "top" INT | "k" "=" INT          (the final k, last if present)
    call       := NAME ["(" [arg ("," arg)*] ")"]
    arg        := NAME "=" value | value                  (positional: see below)
    value      := number | word | "json string"

A call's name is its ``kind`` (``bm25``, ``dense``, ``sparse``, ``rrf``, ``weighted``,
``dense_rescore``, ``rerank``, ``colbert``); a fusion may only follow the generators. One
positional argument is allowed: a number is ``top`` (``k`` for ``rrf``, ``alpha`` for
``weighted``); for ``rerank`` and ``colbert`` a word or string is the ``model`` — where the
words ``cross_encoder`` and ``colbert`` mean "given when the pipeline is built". Model paths
containing ``+ ( ) , =`` or spaces must be quoted.

Example:
    >>> parse_pipeline("bm25(100) -> dense_rescore(top=20) -> rerank(cross_encoder, 5)").stages
    (DenseRescore(kind='dense_rescore', top=20), Rerank(kind='rerank', model=None, top=5))
"""

from __future__ import annotations

import json
import re
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.pipeline.config import (
    FUSION_KINDS,
    GENERATOR_KINDS,
    STAGE_KINDS,
    PipelineConfig,
)

__all__ = ["parse_pipeline"]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<arrow>->)
      | (?P<punct>[+(),=])
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<word>(?:(?!->)[^\s+(),="])+)
    )""",
    re.VERBOSE,
)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_PLACEHOLDERS = {"rerank": "cross_encoder", "colbert": "colbert"}
_POSITIONAL = {"rrf": "k", "weighted": "alpha"}


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, str, int]] = []  # (kind, value, position)
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.lastgroup is None:
                raise self.error(pos, "unexpected character")
            self.items.append((m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup)))
            pos = m.end()
        self.i = 0

    def error(self, pos: int | None, what: str) -> InvalidInput:
        pos = len(self.text) if pos is None else pos
        return InvalidInput(
            f"pipeline string, column {pos + 1}: {what}: {self.text[:pos]}⟨here⟩{self.text[pos:]}"
        )

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def take(self, kind: str, value: str | None = None, what: str = "") -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            expected = what or repr(value or kind)
            pos = None if tok is None else tok[2]
            found = "end of string" if tok is None else repr(tok[1])
            raise self.error(pos, f"expected {expected}, found {found}")
        self.i += 1
        return tok

    def accept(self, kind: str, value: str | None = None) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == kind and (value is None or tok[1] == value):
            self.i += 1
            return True
        return False


def _value(tokens: _Tokens) -> tuple[Any, bool]:
    """A value and whether it is a number."""
    tok = tokens.peek()
    if tok is not None and tok[0] == "string":
        tokens.i += 1
        return json.loads(tok[1]), False
    _, word, _ = tokens.take("word", what="a value")
    if _NUMBER.match(word):
        number = float(word)
        return (int(number) if number.is_integer() and "." not in word and "e" not in word.lower()
                else number), True  # fmt: skip
    return word, False


def _call(tokens: _Tokens) -> tuple[str, dict[str, Any], int]:
    _, name, pos = tokens.take("word", what="a stage name")
    args: dict[str, Any] = {"kind": name}
    if not tokens.accept("punct", "("):
        return name, args, pos
    positional = 0
    while not tokens.accept("punct", ")"):
        if len(args) > 1 or positional:
            tokens.take("punct", ",", what="',' or ')'")
        tok, nxt = tokens.peek(), (tokens.items[tokens.i + 1] if tokens.i + 1 < len(tokens.items)
                                   else None)  # fmt: skip
        if tok and tok[0] == "word" and nxt and nxt[:2] == ("punct", "="):
            tokens.i += 2
            key = tok[1]
            if key in args:
                raise tokens.error(tok[2], f"{name}: argument {key!r} given twice")
            args[key], _ = _value(tokens)
            continue
        start = tok[2] if tok else None
        value, is_number = _value(tokens)
        positional += 1
        if is_number:
            key = _POSITIONAL.get(name, "top")
        elif name in _PLACEHOLDERS:
            key = "model"
            value = None if value == _PLACEHOLDERS[name] else value
        else:
            raise tokens.error(start, f"{name}: unexpected argument {value!r}; use name=value")
        if key in args:
            raise tokens.error(start, f"{name}: argument {key!r} given twice")
        args[key] = value
    return name, args, pos


def parse_pipeline(text: str) -> PipelineConfig:
    """Parse the compact form (see the module docstring) into a validated config.

    Raises:
        InvalidInput: a syntax error (with its column) or an invalid configuration (naming
            the field).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("pipeline string is empty: write e.g. 'bm25(top=100) -> top 10'")
    tokens = _Tokens(text)
    generators: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    fusion: dict[str, Any] | None = None
    data: dict[str, Any] = {}
    while True:
        name, args, pos = _call(tokens)
        if name not in GENERATOR_KINDS:
            known = ", ".join(GENERATOR_KINDS)
            raise tokens.error(pos, f"a pipeline starts with generators ({known}), not {name!r}")
        generators.append(args)
        if not tokens.accept("punct", "+"):
            break
    while tokens.accept("arrow"):
        tok = tokens.peek()
        if tok is not None and tok[:2] in (("word", "top"), ("word", "k")):
            tokens.i += 1
            if tok[1] == "k":
                tokens.take("punct", "=")
            value, is_number = _value(tokens)
            if not is_number:
                raise tokens.error(tok[2], f"final {tok[1]} needs a number, got {value!r}")
            data["k"] = value
            rest = tokens.peek()
            if rest is not None:
                raise tokens.error(rest[2], "the final top/k must come last")
            break
        name, args, pos = _call(tokens)
        if name in FUSION_KINDS:
            if fusion is not None or stages:
                raise tokens.error(pos, f"{name}: a fusion may only follow the generators, once")
            fusion = args
        elif name in STAGE_KINDS:
            stages.append(args)
        else:
            known = ", ".join(GENERATOR_KINDS + FUSION_KINDS + STAGE_KINDS)
            raise tokens.error(pos, f"unknown stage {name!r}; known: {known}, top N")
    rest = tokens.peek()
    if rest is not None:
        raise tokens.error(rest[2], "expected '->' or '+'")
    data.update(generators=generators, stages=stages)
    if fusion is not None:
        data["fusion"] = fusion
    return PipelineConfig.from_dict(data, source="pipeline string")
