"""Readers for BEIR retrieval datasets and the STS Benchmark.

A BEIR dataset is a folder holding ``corpus.jsonl`` (one ``{"_id", "title", "text"[,
"metadata"]}`` object a line), ``queries.jsonl`` (``{"_id", "text"[, "metadata"]}``) and
``qrels/<split>.tsv`` (header ``query-id<TAB>corpus-id<TAB>score``). The readers follow BEIR's
``GenericDataLoader`` (Thakur et al. 2021): relevance scores are integers, queries are the ones
judged in the split's qrels, and a document is fed to a bi-encoder as ``title + " " + text``
stripped. Queries and qrels are small and loaded eagerly; the corpus is streamed.

Example:
    >>> ds = load_beir("../shared/datasets/scifact", split="test")  # doctest: +SKIP
    >>> len(ds.queries), sum(len(d) for d in ds.qrels.values())  # doctest: +SKIP
    (300, 339)
    >>> ids, texts = load_corpus(ds)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput

__all__ = [
    "BeirDataset",
    "Document",
    "StsData",
    "iter_corpus",
    "load_beir",
    "load_corpus",
    "load_sts",
]

StrPath = str | PathLike[str]


@dataclass(frozen=True)
class Document:
    """One corpus document.

    Attributes:
        id: The document id (``_id`` in ``corpus.jsonl``).
        title: The title, ``""`` when the line has none.
        text: The body text.
        metadata: Any extra fields of the ``metadata`` object, ``{}`` when absent.
    """

    id: str
    title: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """The text a bi-encoder sees: ``(title + " " + text).strip()``, as in BEIR and MTEB."""
        return (self.title + " " + self.text).strip()


@dataclass(frozen=True)
class BeirDataset:
    """The queries and judgements of one BEIR split, and where its corpus lives.

    Attributes:
        name: The dataset folder's name, e.g. ``"scifact"``.
        corpus_path: Path of ``corpus.jsonl``; stream it with :func:`iter_corpus`.
        queries: ``{query_id: text}`` for the queries judged in this split, in the order of
            ``queries.jsonl``.
        qrels: ``{query_id: {doc_id: relevance}}`` with integer relevance, as in the TSV.
        split: The split the qrels come from (``"train"``, ``"dev"``, ``"test"``, ...).
    """

    name: str
    corpus_path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str


@dataclass(frozen=True)
class StsData:
    """Sentence pairs with gold similarity scores (STS Benchmark: 0 to 5).

    Attributes:
        sentences1: First sentence of each pair.
        sentences2: Second sentence of each pair, same length as ``sentences1``.
        scores: Gold similarity of each pair, same length.
    """

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


def iter_jsonl(path: Path, *, missing_hint: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON-lines file.

    Every failure is an :class:`~embedstack.errors.InvalidInput` naming the file (and line):
    missing (followed by ``missing_hint``), unreadable, not UTF-8, malformed JSON, or a line
    that is not a JSON object.
    """
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        hint = f"; {missing_hint}" if missing_hint else ""
        raise InvalidInput(f"{path}: file not found{hint}") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc.strerror})") from None
    with handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(
                        f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno}); "
                        "fix or remove this line, each line must be one JSON object"
                    ) from None
                if not isinstance(obj, dict):
                    raise InvalidInput(
                        f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}; "
                        "each line must be one JSON object"
                    )
                yield lineno, obj
        except UnicodeDecodeError:
            raise InvalidInput(f"{path}: not UTF-8 text") from None


_BEIR_FILES = "a BEIR dataset folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv"


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return iter_jsonl(path, missing_hint=_BEIR_FILES)


def _get_id(obj: Mapping[str, Any], path: Path, lineno: int) -> str:
    raw = obj.get("_id")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise InvalidInput(
            f"{path}:{lineno}: missing or invalid '_id' (got {raw!r}); "
            "every line needs a string '_id'"
        )
    return str(raw)


def _get_text(obj: Mapping[str, Any], key: str, path: Path, lineno: int) -> str:
    raw = obj.get(key)
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise InvalidInput(
            f"{path}:{lineno}: field {key!r} must be a string, got {type(raw).__name__}"
        )
    return raw


def _corpus_file(source: StrPath | BeirDataset) -> Path:
    if isinstance(source, BeirDataset):
        return source.corpus_path
    path = Path(source)
    return path / "corpus.jsonl" if path.is_dir() else path


def iter_corpus(source: StrPath | BeirDataset) -> Iterator[Document]:
    """Stream the documents of a BEIR corpus, one line at a time.

    Args:
        source: A :class:`BeirDataset`, a dataset folder, or a ``corpus.jsonl`` file.

    Yields:
        Each :class:`Document` in file order.

    Raises:
        InvalidInput: The file is missing, a line is not a JSON object, a line lacks ``_id``,
            a field has the wrong type, or an id repeats; the message names file and line.

    Example:
        >>> for doc in iter_corpus("../shared/datasets/scifact"):  # doctest: +SKIP
        ...     print(doc.id, doc.full_text[:30])
        ...     break
        4983 Microstructural development o
    """
    path = _corpus_file(source)
    seen: set[str] = set()
    for lineno, obj in _iter_jsonl(path):
        doc_id = _get_id(obj, path, lineno)
        if doc_id in seen:
            raise InvalidInput(
                f"{path}:{lineno}: duplicate document id {doc_id!r}; ids must be unique"
            )
        seen.add(doc_id)
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InvalidInput(
                f"{path}:{lineno}: field 'metadata' must be an object, "
                f"got {type(metadata).__name__}"
            )
        yield Document(
            id=doc_id,
            title=_get_text(obj, "title", path, lineno),
            text=_get_text(obj, "text", path, lineno),
            metadata=metadata,
        )


def load_corpus(source: StrPath | BeirDataset) -> tuple[list[str], list[str]]:
    """Load a whole corpus as parallel lists, for corpora that fit in memory.

    Args:
        source: A :class:`BeirDataset`, a dataset folder, or a ``corpus.jsonl`` file.

    Returns:
        ``(ids, texts)`` where ``texts[i]`` is ``Document.full_text`` of ``ids[i]``.

    Raises:
        InvalidInput: As :func:`iter_corpus`.

    Example:
        >>> ids, texts = load_corpus("../shared/datasets/scifact")  # doctest: +SKIP
        >>> len(ids)  # doctest: +SKIP
        5183
    """
    ids: list[str] = []
    texts: list[str] = []
    for doc in iter_corpus(source):
        ids.append(doc.id)
        texts.append(doc.full_text)
    return ids, texts


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if lineno == 1 and cols[0].strip() == "query-id":
                continue
            if len(cols) < 3:
                raise InvalidInput(
                    f"{path}:{lineno}: expected 3 tab-separated columns "
                    f"(query-id, corpus-id, score), got {len(cols)}"
                )
            qid, did, raw_score = cols[0].strip(), cols[1].strip(), cols[2].strip()
            try:
                score = int(raw_score)
            except ValueError:
                raise InvalidInput(
                    f"{path}:{lineno}: relevance score {raw_score!r} is not an integer"
                ) from None
            qrels.setdefault(qid, {})[did] = score
    return qrels


def load_beir(path: StrPath, split: str = "test") -> BeirDataset:
    """Load the queries and judgements of one split of a BEIR dataset folder.

    Queries are restricted to those with judgements in ``qrels/<split>.tsv`` and kept in the
    order of ``queries.jsonl``. The corpus is not read; stream it with :func:`iter_corpus`.

    Args:
        path: The dataset folder (holding ``corpus.jsonl``, ``queries.jsonl``, ``qrels/``).
        split: Which ``qrels/<split>.tsv`` to use.

    Returns:
        A :class:`BeirDataset`.

    Raises:
        InvalidInput: The folder, ``queries.jsonl`` or the split's qrels file is missing, a
            line is malformed, or the qrels judge a query absent from ``queries.jsonl``.

    Example:
        >>> ds = load_beir("../shared/datasets/scifact")  # doctest: +SKIP
        >>> ds.split, len(ds.queries)  # doctest: +SKIP
        ('test', 300)
    """
    root = Path(path)
    if not root.is_dir():
        raise InvalidInput(f"{root}: not a directory; pass a BEIR dataset folder")
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise InvalidInput(f"invalid split name {split!r}; use e.g. 'test', 'dev' or 'train'")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise InvalidInput(
            f"{qrels_path}: no qrels for split {split!r}; "
            f"available splits: {', '.join(available) or 'none'}"
        )
    qrels = _read_qrels(qrels_path)
    queries_path = root / "queries.jsonl"
    queries: dict[str, str] = {}
    for lineno, obj in _iter_jsonl(queries_path):
        qid = _get_id(obj, queries_path, lineno)
        if qid in qrels:
            queries[qid] = _get_text(obj, "text", queries_path, lineno)
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        shown = ", ".join(repr(q) for q in missing[:5])
        raise InvalidInput(
            f"{qrels_path}: {len(missing)} judged queries are absent from {queries_path} "
            f"(e.g. {shown}); the two files do not belong together"
        )
    return BeirDataset(
        name=root.resolve().name,
        corpus_path=root / "corpus.jsonl",
        queries=queries,
        qrels=qrels,
        split=split,
    )


def load_sts(path: StrPath) -> StsData:
    """Load an STS Benchmark file: tab-separated, no header, no quoting.

    Columns are genre, file, year, id, score, sentence1, sentence2; some rows carry extra
    columns, which are ignored. Lines are split on tabs only, since sentences may hold quotes.

    Args:
        path: The ``sts-*.csv`` file.

    Returns:
        A :class:`StsData` with one entry per non-blank line.

    Raises:
        InvalidInput: The file is missing, a line has fewer than 7 columns, or a score is not
            a number; the message names the line.

    Example:
        >>> sts = load_sts("../shared/datasets/stsb/sts-test.csv")  # doctest: +SKIP
        >>> len(sts.scores), sts.scores[0]  # doctest: +SKIP
        (1379, 2.5)
    """
    file = Path(path)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    try:
        handle = file.open(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{file}: file not found") from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 7:
                raise InvalidInput(
                    f"{file}:{lineno}: expected at least 7 tab-separated columns "
                    f"(genre, file, year, id, score, sentence1, sentence2), got {len(cols)}"
                )
            try:
                score = float(cols[4])
            except ValueError:
                raise InvalidInput(
                    f"{file}:{lineno}: score {cols[4]!r} in column 5 is not a number"
                ) from None
            if not math.isfinite(score):
                raise InvalidInput(f"{file}:{lineno}: score {cols[4]!r} is not finite")
            scores.append(score)
            s1.append(cols[5])
            s2.append(cols[6])
    return StsData(sentences1=s1, sentences2=s2, scores=scores)
