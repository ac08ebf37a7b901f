"""Readers for the local files of the non-retrieval tasks: one JSON object a line.

Every task reads ``PATH``: either one ``.jsonl`` file or a folder holding ``<split>.jsonl``
(``test.jsonl`` by default). In a single file, a line may carry ``"split": "test"``; lines
with another split are skipped, lines without one belong to every split. Blank lines are
skipped. The fields of a line, per task:

=====================  ==============================================================
classification         ``{"text": str, "label": str | int}``; training examples come
                       from ``train.jsonl`` next to ``<split>.jsonl`` (folder), or from
                       the lines whose ``"split"`` is ``"train"`` (single file, where
                       every line must then name its split)
clustering             ``{"text": str, "label": str | int[, "set": str | int]}``; lines
                       sharing a ``set`` are clustered together (MTEB's clustering sets;
                       without ``set``, the whole file is one set)
pair-classification    ``{"sentence1": str, "sentence2": str, "label": 0 | 1}``
reranking              ``{"query": str | [str, ...], "positive": [str, ...],
                       "negative": [str, ...]}``
=====================  ==============================================================

Labels are compared as strings (``1`` and ``"1"`` are the same label). Any malformed line is
an :class:`~embedstack.errors.InvalidInput` naming the file and the line; so is a split with
no examples.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "pairs.jsonl").write_text(
    ...     '{"sentence1": "a cat", "sentence2": "a kitten", "label": 1}\\n')
    >>> read_pairs(folder / "pairs.jsonl").labels
    [1]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.eval.datasets import iter_jsonl

__all__ = [
    "LabelledTexts",
    "Pairs",
    "RerankingSample",
    "read_classification",
    "read_clustering",
    "read_pairs",
    "read_reranking",
]


@dataclass(frozen=True)
class LabelledTexts:
    """Texts and their gold labels (classification splits, clustering sets).

    Attributes:
        texts: The texts, in file order.
        labels: One label a text, as strings.
        source: Where they were read from (``file`` or ``file [set NAME]``), for messages.
    """

    texts: list[str]
    labels: list[str]
    source: str = ""


@dataclass(frozen=True)
class Pairs:
    """Sentence pairs labelled 1 (similar, duplicate, paraphrase) or 0."""

    sentences1: list[str]
    sentences2: list[str]
    labels: list[int]


@dataclass(frozen=True)
class RerankingSample:
    """One query (or several phrasings of it) with its judged candidates."""

    queries: list[str]
    positive: list[str]
    negative: list[str]


def _split_file(path: Path, split: str) -> tuple[Path, bool]:
    """``(file to read, whether lines must be filtered by their "split" field)``."""
    if path.is_dir():
        file = path / f"{split}.jsonl"
        if not file.is_file():
            found = sorted(p.name for p in path.glob("*.jsonl"))
            raise InvalidInput(
                f"{path}: no {split}.jsonl in this folder (found: {', '.join(found) or 'none'}); "
                "pass a .jsonl file or a folder with <split>.jsonl"
            )
        return file, False
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder")
    return path, True


def _lines(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return iter_jsonl(file)


def _rows(path: Path, split: str) -> tuple[Path, list[tuple[int, dict[str, Any]]]]:
    """The lines of ``split``: the folder's ``<split>.jsonl``, or the file's matching lines."""
    file, filtered = _split_file(path, split)
    rows = []
    for lineno, obj in _lines(file):
        if filtered and "split" in obj:
            if not isinstance(obj["split"], str):
                raise InvalidInput(f"{file}:{lineno}: field 'split' must be a string")
            if obj["split"] != split:
                continue
        rows.append((lineno, obj))
    if not rows:
        raise InvalidInput(f"{file}: no examples for split {split!r}")
    return file, rows


def _text(obj: dict[str, Any], key: str, file: Path, lineno: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else repr(value)[:40]
        raise InvalidInput(f"{file}:{lineno}: field {key!r} must be a non-empty string ({got})")
    return value


def _texts(obj: dict[str, Any], key: str, file: Path, lineno: int) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidInput(f"{file}:{lineno}: field {key!r} must be a list of non-empty strings")
    return list(value)


def _label(obj: dict[str, Any], key: str, file: Path, lineno: int) -> str:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        got = "missing" if value is None else repr(value)[:40]
        raise InvalidInput(f"{file}:{lineno}: field {key!r} must be a string or integer ({got})")
    return str(value)


def _labelled(file: Path, rows: list[tuple[int, dict[str, Any]]], source: str) -> LabelledTexts:
    texts = [_text(obj, "text", file, lineno) for lineno, obj in rows]
    labels = [_label(obj, "label", file, lineno) for lineno, obj in rows]
    return LabelledTexts(texts, labels, source)


def read_classification(path: Path, split: str = "test") -> tuple[LabelledTexts, LabelledTexts]:
    """``(train, evaluation)`` examples of a classification task.

    Raises:
        InvalidInput: No training or evaluation examples, a malformed line, or (single
            file) a line without its ``"split"``.
    """
    if split == "train":
        raise InvalidInput(
            "split 'train' holds the classifier's training data: evaluate another split"
        )
    if path.is_dir():
        train_file, train_rows = _rows(path, "train")
        test_file, test_rows = _rows(path, split)
    else:
        test_file, test_rows = _rows(path, split)
        train_file, train_rows = _rows(path, "train")
        for lineno, obj in test_rows:
            if "split" not in obj:
                raise InvalidInput(
                    f"{path}:{lineno}: no 'split' field; in a single classification file every "
                    'line says whether it is "train" or the evaluated split'
                )
    return (
        _labelled(train_file, train_rows, str(train_file)),
        _labelled(test_file, test_rows, str(test_file)),
    )


def read_clustering(path: Path, split: str = "test") -> list[LabelledTexts]:
    """The clustering sets of a task, in the order they first appear."""
    file, rows = _rows(path, split)
    sets: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for lineno, obj in rows:
        name = _label(obj, "set", file, lineno) if "set" in obj else ""
        sets.setdefault(name, []).append((lineno, obj))
    return [
        _labelled(file, members, f"{file} [set {name}]" if name else str(file))
        for name, members in sets.items()
    ]


def read_pairs(path: Path, split: str = "test") -> Pairs:
    """Labelled sentence pairs of a pair-classification task."""
    file, rows = _rows(path, split)
    first, second, labels = [], [], []
    for lineno, obj in rows:
        first.append(_text(obj, "sentence1", file, lineno))
        second.append(_text(obj, "sentence2", file, lineno))
        label = obj.get("label")
        if isinstance(label, bool) or label not in (0, 1):
            raise InvalidInput(f"{file}:{lineno}: field 'label' must be 0 or 1, got {label!r}")
        labels.append(int(label))
    return Pairs(first, second, labels)


def read_reranking(path: Path, split: str = "test") -> list[RerankingSample]:
    """Queries with their positive and negative candidates, one sample a line."""
    file, rows = _rows(path, split)
    samples = []
    for lineno, obj in rows:
        query = obj.get("query")
        queries = [query] if isinstance(query, str) else query
        if not isinstance(queries, list) or not queries:
            raise InvalidInput(
                f"{file}:{lineno}: field 'query' must be a string or a list of strings"
            )
        queries = _texts({"query": queries}, "query", file, lineno)
        positive = _texts(obj, "positive", file, lineno)
        negative = _texts(obj, "negative", file, lineno)
        samples.append(RerankingSample(queries, positive, negative))
    return samples
