"""The parts of Ray ingestion that run on workers (file reading, chunking and encoding) and
the driver's encoder that serves their vectors to the index. See
:mod:`embedstack.integrations.ray_ingest`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders import TextEncoder, load_encoder
from embedstack.errors import ModelMismatch
from embedstack.index._setup import recorded_chunker
from embedstack.index.sources import json_doc, read_file
from embedstack.integrations._encoders import WrappedEncoder

__all__ = [
    "EncodeAndWrite",
    "EncodeChunks",
    "LookupEncoder",
    "RESULT_COLUMNS",
    "docs_of",
    "parquet_rows",
    "read_rows",
    "shards",
    "token_batches",
]

#: The columns of what an :class:`EncodeAndWrite` actor returns: one row per batch written.
RESULT_COLUMNS = ("added", "updated", "unchanged", "chunks", "docs", "chars", "misses")

EncoderFactory = Callable[[], TextEncoder]


def _row(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["id"], "title": doc["title"] or "", "text": doc["text"],
            "metadata": json.dumps(doc["metadata"], sort_keys=True)}  # fmt: skip


def shards(file: Path, pieces: int) -> list[tuple[int, int]]:
    """``pieces`` byte ranges ``[start, end)`` covering ``file`` (a line belongs to the
    range it starts in)."""
    size = file.stat().st_size
    step = max(1, -(-size // max(1, pieces)))
    return [(a, min(a + step, size)) for a in range(0, size, step)] or [(0, 0)]


def _jsonl_range(file: Path, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of the lines of ``file`` that start in ``[start, end)``."""
    with file.open("rb") as handle:
        number = 1
        done = 0
        while done < start:  # count the lines before ``start`` (fast: bytes.count)
            block = handle.read(min(1 << 20, start - done))
            number += block.count(b"\n")
            done += len(block)
        if start > 0:  # a line that began before ``start`` belongs to the previous range
            handle.seek(start - 1)
            if handle.read(1) != b"\n":
                skipped = handle.readline()
                start += len(skipped)
                number += 1
        pos = start
        while pos < end:
            raw = handle.readline()
            if not raw:
                break
            yield number, raw
            number += 1
            pos += len(raw)


def parquet_rows(file: Path, group: int) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(row number, document, problem)`` of one row group of a Parquet file (rows numbered
    from 1 over the whole file), by the rules of ``.jsonl`` lines
    (:func:`~embedstack.index.sources.json_doc`; a ``metadata`` column may hold JSON text)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(file)
    first = sum(pf.metadata.row_group(i).num_rows for i in range(group))
    for number, record in enumerate(pf.read_row_group(group).to_pylist(), start=first + 1):
        meta = record.get("metadata")
        if isinstance(meta, str):
            try:
                record["metadata"] = json.loads(meta)
            except json.JSONDecodeError:
                yield number, None, "'metadata' is not valid JSON"
                continue
        doc, problem = json_doc({k: v for k, v in record.items() if v is not None})
        yield number, doc, problem


def read_rows(
    item: dict[str, Any], skip: frozenset[tuple[str, int | None]], skip_ids: frozenset[str]
) -> Iterator[dict[str, Any]]:
    """Ray ``flat_map``: the documents of one file, of one byte range of a JSONL file, or of
    one row group of a Parquet file (``item``: ``file``, ``root``, ``prefix``, and
    ``start``/``end`` for a range, ``group`` for a row group), as rows
    ``{id, title, text, metadata}`` (metadata as JSON), leaving out the invalid inputs the
    driver's scan found (``skip``: ``(file, line)``) and ``skip_ids``. Lines are parsed by
    the rules of :func:`~embedstack.index.sources.json_doc`, other files by
    :func:`~embedstack.index.sources.read_file`."""
    file = Path(item["file"])
    if "group" in item:
        for line, doc, problem in parquet_rows(file, int(item["group"])):
            if doc is not None and problem is None and (str(file), line) not in skip:
                if doc["id"] not in skip_ids:
                    yield _row(doc)
        return
    if "start" in item:
        for line, raw in _jsonl_range(file, int(item["start"]), int(item["end"])):
            if (str(file), line) in skip or not raw.strip():
                continue
            try:
                doc, problem = json_doc(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue  # the scan reported it
            if doc is not None and problem is None and doc["id"] not in skip_ids:
                yield _row(doc)
        return
    for _, where, doc, problem in read_file(file, Path(item["root"]), item["prefix"]):
        if doc is None or problem is not None or (str(file), where) in skip:
            continue
        if doc["id"] not in skip_ids:
            yield _row(doc)


def token_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Positions grouped so each group's padded size (``len(group) * longest``) stays within
    ``max_tokens`` (a longer text is alone): texts sorted by length, so padding is small.

    Example:
        >>> token_batches([10, 3, 4, 9], 16)
        [[1, 2], [3], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * max(lengths[i], 1) <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _estimate_tokens(text: str) -> int:
    """About 4 characters per word-piece token (English; an estimate for batching only)."""
    return len(text) // 4 + 2


def _actor_threads(record: dict[str, Any], options: dict[str, Any]) -> dict[str, int]:
    """``{"threads": n}`` for a model loaded inside a Ray actor: the CPUs Ray assigned the
    actor (1 by default), so that N actors on a node run N x their CPUs inference threads,
    not N x every core of the node (ONNX Runtime takes the process's CPU affinity, which Ray
    does not narrow). Empty outside an actor, when the index records its own ``threads``,
    and for registry models built by a factory (hashing, static), which take no threads."""
    from embedstack.encoders.registry import find_model

    spec = find_model(str(record["name"]))
    if "threads" in options or (spec is not None and spec.factory is not None):
        return {}
    try:
        import ray

        if not ray.is_initialized():
            return {}
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - no Ray, or not inside a worker
        return {}
    return {"threads": max(1, int(cpus))} if cpus else {}


class EncodeChunks:
    """Ray actor (``map_batches``): one encoder per actor; chunks a batch of documents with
    the index's recorded chunker and encodes the chunks in token-sized batches.

    Args:
        manifest: the index's manifest (encoder record and chunking).
        encoder: a zero-argument factory of the encoder; None loads the recorded one by name
            with its recorded options, as ``Index.open`` does.
        max_batch_tokens: the padded tokens (estimated) of one encoder call.

    Raises:
        ModelMismatch: the encoder is not the index's model.
    """

    def __init__(self, manifest: dict[str, Any], encoder: EncoderFactory | None,
                 max_batch_tokens: int) -> None:  # fmt: skip
        rec = manifest["encoder"]
        options = rec.get("options") or {}
        if encoder is not None:
            enc = encoder()
        else:
            enc = load_encoder(rec["name"], **options, **_actor_threads(rec, options))
        if enc.model_id != rec["model_id"]:
            raise ModelMismatch(f"the index was built with {rec['model_id']}, the Ray workers "
                                f"load {enc.model_id}: pass the same encoder")  # fmt: skip
        self.encoder = enc
        self.chunker = recorded_chunker(enc, manifest)
        self.max_batch_tokens = max_batch_tokens

    def encode(self, texts: list[str]) -> FloatArray:
        """``(len(texts), dim)`` document vectors, encoded in token-sized batches."""
        out = np.zeros((len(texts), int(self.encoder.dim)), dtype=np.float32)
        lengths = [_estimate_tokens(t) for t in texts]
        for group in token_batches(lengths, self.max_batch_tokens):
            out[group] = self.encoder.encode_documents([texts[i] for i in group])
        return out

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        chunks = self.chunker.chunks([r["title"] for r in rows], [r["text"] for r in rows])
        texts = [c.embed for c in chunks]
        vecs = self.encode(texts) if texts else np.zeros((0, 0), np.float32)
        per_doc: list[list[int]] = [[] for _ in rows]
        for row, c in enumerate(chunks):
            per_doc[c.doc].append(row)
        return pa.table({
            "id": [r["id"] for r in rows],
            "title": [r["title"] for r in rows],
            "text": [r["text"] for r in rows],
            "metadata": [r["metadata"] for r in rows],
            "chunks": pa.array([[texts[i] for i in rows_] for rows_ in per_doc],
                               type=pa.list_(pa.string())),
            "vectors": pa.array([np.ascontiguousarray(vecs[rows_]).tobytes() for rows_ in per_doc],
                                type=pa.binary()),
        })  # fmt: skip


def docs_of(cols: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The index documents of an encoded batch's columns."""
    return [{"id": i, "title": t, "text": x, "metadata": json.loads(m)}
            for i, t, x, m in zip(cols["id"], cols["title"], cols["text"], cols["metadata"],
                                  strict=True)]  # fmt: skip


def feed(lookup: LookupEncoder, cols: dict[str, list[Any]]) -> None:
    """Serve an encoded batch's chunk vectors to ``lookup``."""
    for chunks, raw in zip(cols["chunks"], cols["vectors"], strict=True):
        lookup.feed(chunks, np.frombuffer(raw, np.float32).reshape(len(chunks), lookup.dim))


class EncodeAndWrite(EncodeChunks):
    """Ray actor for targets that take concurrent writers (PostgreSQL): encodes a batch as
    :class:`EncodeChunks` does, then upserts it into ``target`` over the actor's own
    connection, as one atomic batch, and returns one row of counts
    (:data:`RESULT_COLUMNS`). A retried batch (a restarted actor) whose first try had
    committed finds its documents unchanged (same ids, same content hash) and writes
    nothing twice.

    Args:
        target: the index URI.
        manifest, encoder, max_batch_tokens: as :class:`EncodeChunks`.
    """

    def __init__(self, target: str, manifest: dict[str, Any], encoder: EncoderFactory | None,
                 max_batch_tokens: int) -> None:  # fmt: skip
        from embedstack.index import Index

        super().__init__(manifest, encoder, max_batch_tokens)
        self.lookup = LookupEncoder(self.encoder)
        self.index = Index.open(target, encoder=self.lookup)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        cols = super().__call__(batch).to_pydict()
        docs = docs_of(cols)
        feed(self.lookup, cols)
        misses = self.lookup.misses
        try:
            result = self.index.upsert(docs)
        finally:
            self.lookup.clear()
        counts = {"added": result.added, "updated": result.updated,
                  "unchanged": result.unchanged, "chunks": result.chunks, "docs": len(docs),
                  "chars": sum(len(d["text"]) for d in docs),
                  "misses": self.lookup.misses - misses}  # fmt: skip
        return pa.table({name: [int(counts[name])] for name in RESULT_COLUMNS})


class LookupEncoder(WrappedEncoder):
    """The driver's encoder: the index's own model, whose ``encode_documents`` returns the
    vectors the Ray workers computed for these exact chunk texts. A text the workers did not
    encode (none, when they chunk as the index does) is encoded here and counted in
    :attr:`misses`. Everything else (identity, queries, tokenizer) is the model's.
    """

    def __init__(self, base: TextEncoder) -> None:
        super().__init__(base)
        self.vectors: dict[str, FloatArray] = {}
        self.misses = 0

    def feed(self, chunks: Iterable[str], vectors: FloatArray) -> None:
        """Serve ``vectors`` (one row per chunk text) to the next ``encode_documents``."""
        self.vectors.update(zip(chunks, vectors, strict=True))

    def clear(self) -> None:
        self.vectors.clear()

    def encode_documents(self, texts: Iterable[str]) -> FloatArray:
        items = list(texts)
        missing = [t for t in items if t not in self.vectors]
        if missing:
            self.misses += len(missing)
            self.feed(missing, np.asarray(self.base.encode_documents(missing), np.float32))
        return np.stack([self.vectors[t] for t in items]).astype(np.float32, copy=False)
