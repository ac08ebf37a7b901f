"""Ingestion on a Ray cluster (extra ``ray``): read, chunk and encode in parallel; write in
parallel to an engine that takes concurrent writers (PostgreSQL), else through one writer.

The pipeline is Ray Data: the files of ``paths`` (text, Markdown, HTML, JSONL, BEIR folders;
read by :func:`embedstack.index.sources.read_file`, so ids and validation are those of
``embedstack index add``; and Parquet files with the columns of a JSONL line, ``id`` or
``_id``, ``text``, ``title``, ``metadata``, read by row group) → ``flat_map`` to document
rows → ``map_batches`` on an actor pool of ``workers`` actors, each holding one copy of the
model, chunking with the index's recorded chunker and encoding the chunks in batches of at
most ``max_batch_tokens`` padded tokens → the driver, which ``upsert``\\ s each batch as it
arrives. The index is opened with an encoder that serves the workers' vectors for these
exact chunk texts, so the index chunks, stores and commits as usual and nothing is encoded
twice (:attr:`IngestResult.driver_encoded` counts texts the workers did not cover; 0 unless
the chunkers disagree).

Failure and re-runs: Ray restarts a killed actor and retries its batch; nothing of a batch
is written before the driver's upsert, which is atomic. A run that fails leaves every batch
upserted before the failure committed; running it again skips those (same ids, same content
hash: ``unchanged``) and adds the rest, so nothing is lost or duplicated.

Where the batches are written:

* **PostgreSQL** (a store with ``concurrent_writers``): by the actors themselves. Each
  actor opens its own connection to the target (:class:`~._ray_work.EncodeAndWrite`) and
  upserts each batch it encoded, as one transaction (the store serialises the commits of
  concurrent writers with an advisory lock; encoding and the transfer of rows run in
  parallel). The driver only sums the counts. A killed actor's batch is retried by Ray: a
  transaction cut short is rolled back by PostgreSQL, one that had committed finds its
  documents unchanged on the retry, so nothing is lost or stored twice.
* **A local index** and **Milvus**: through the driver, one ``upsert`` per batch as it
  arrives. A local index has a single writer (its file lock); milvus-lite serves one process
  per file, and the Milvus store's commit protocol allows one writer per index at a time
  (see :mod:`embedstack.index.backends.milvus`), so parallel writers would corrupt it.

Example:
    >>> from embedstack.integrations.ray_ingest import ingest
    >>> ingest("my-index", ["docs/"], workers=2)                     # doctest: +SKIP
    IngestResult(added=120, updated=0, unchanged=0, chunks=310, ...)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.encoders import TextEncoder
from embedstack.errors import EmbedstackError, InvalidInput, require
from embedstack.index import Index
from embedstack.index.sources import (
    Problem,
    SourceOptions,
    SourceScan,
    find_conflicts,
    input_files,
    scan_documents,
)
from embedstack.integrations._ray_work import (
    RESULT_COLUMNS,
    EncodeAndWrite,
    EncodeChunks,
    LookupEncoder,
    docs_of,
    feed,
    parquet_rows,
    read_rows,
    shards,
)

__all__ = ["IngestResult", "ingest", "is_parquet"]


@dataclass(frozen=True)
class IngestResult:
    """What an :func:`ingest` run did.

    Attributes:
        added, updated, unchanged: documents, as :class:`~embedstack.index.AddResult`.
        chunks: chunks embedded and stored by this run.
        batches: atomic upserts made (by the driver, or by the actors for PostgreSQL).
        driver_encoded: chunk texts the writer had to encode itself (0 when the workers
            covered every chunk).
        parallel_writes: whether the actors wrote their batches to the target themselves.
        seconds: wall time from the first read to the last commit.
    """

    added: int
    updated: int
    unchanged: int
    chunks: int
    batches: int
    driver_encoded: int
    seconds: float
    parallel_writes: bool = False


def _ray() -> Any:
    return require("ray", "ray", "ingestion with --ray")


def _cause(exc: BaseException) -> EmbedstackError | None:
    """The embedstack error a worker raised, from Ray's wrappers around it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, EmbedstackError):
            return item
        todo += [item.__cause__, item.__context__, getattr(item, "cause", None)]
    return None


def _check_args(workers: int, batch_docs: int, max_batch_tokens: int) -> None:
    for name, value in (("workers", workers), ("batch_docs", batch_docs),
                        ("max_batch_tokens", max_batch_tokens)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be an int >= 1, got {value!r}")


def ingest(
    target: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    *,
    workers: int = 2,
    options: SourceOptions | None = None,
    skip_invalid: bool = False,
    skip_ids: frozenset[str] = frozenset(),
    batch_docs: int = 256,
    max_batch_tokens: int = 16384,
    encoder: Callable[[], TextEncoder] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> IngestResult:
    """Add or update the documents of ``paths`` in the index ``target`` on Ray.

    Uses the running Ray cluster (``ray.init`` called before, or ``RAY_ADDRESS``); else
    starts a local one for the run and shuts it down after.

    Args:
        target: the index (a folder or an engine URI); it must exist. A PostgreSQL
            target is written by the actors in parallel (see the module docstring).
        paths: files and folders, as ``embedstack index add`` reads them, and Parquet files.
        workers: actors in the encoding pool (one model each).
        options: include/exclude globs and the id prefix.
        skip_invalid: add the valid documents and leave invalid inputs out; otherwise any
            invalid input refuses the run before anything is written.
        skip_ids: document ids to leave out.
        batch_docs: documents per worker batch, and per atomic upsert.
        max_batch_tokens: padded tokens (estimated, 4 characters each) per encoder call.
        encoder: a zero-argument factory of the index's encoder, called once per actor and
            on the driver (it is shipped to the workers); None loads the recorded model.
        on_batch: called after each commit with ``(documents, characters)``.

    Returns:
        :class:`IngestResult`.

    Raises:
        InvalidInput: bad arguments, a missing path, invalid inputs (without
            ``skip_invalid``), or ids the index holds for another file.
        IndexNotFound: no index at ``target``.
        ModelMismatch: ``encoder`` is not the index's model.
        MissingDependency: Ray is not installed (extra ``ray``).
        EmbedstackError: a worker failed; the batches committed before it stay.
    """
    _check_args(workers, batch_docs, max_batch_tokens)
    ray = _ray()
    given = [Path(p) for p in paths]
    parquet = [p for p in given if is_parquet(p)]
    files = [p for p in given if not is_parquet(p)]
    opts = options or SourceOptions()
    scan = scan_documents(files, opts) if files else SourceScan()
    scan.problems += _scan_parquet(parquet, scan)
    if scan.problems and not skip_invalid:
        shown = "; ".join(str(p) for p in scan.problems[:5])
        raise InvalidInput(f"{len(scan.problems)} invalid input(s), nothing was added: {shown}")
    base = encoder() if encoder is not None else None
    with Index.open(target, encoder=base) as probe:
        base, manifest = probe.encoder, probe.manifest
        parallel = _parallel_target(probe)
    lookup = LookupEncoder(base)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        with Index.open(target, encoder=lookup) as index:
            conflicts = find_conflicts(index, scan.file_sources)
            if conflicts and not skip_invalid:
                shown = "; ".join(str(p) for p in list(conflicts.values())[:5])
                raise InvalidInput(f"{len(conflicts)} id conflict(s), nothing was added: {shown}")
            skip = frozenset((str(p.path), p.line) for p in scan.problems)
            items = _items(files, opts, workers) + _parquet_items(parquet)
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
            # reading takes no CPU slot, so it runs beside an actor pool that holds them all
            ds = ds.flat_map(read_rows, num_cpus=0, fn_kwargs={
                "skip": skip, "skip_ids": skip_ids | frozenset(conflicts)})  # fmt: skip
            pool = min(workers, max(1, -(-scan.n_documents // batch_docs)))
            kwargs = {"manifest": manifest, "encoder": encoder,
                      "max_batch_tokens": max_batch_tokens}  # fmt: skip
            ds = ds.map_batches(
                EncodeAndWrite if parallel else EncodeChunks, batch_size=batch_docs,
                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=pool),
                fn_constructor_kwargs={**kwargs, "target": str(target)} if parallel else kwargs,
            )  # fmt: skip
            if parallel:
                return _collect(ds, on_batch)
            return _write(index, lookup, ds, batch_docs, on_batch)
    finally:
        if started_ray:
            ray.shutdown()


def _parallel_target(index: Index) -> bool:
    """Whether ``index`` lives in an engine that takes concurrent writers (the actors then
    write their batches themselves)."""
    from embedstack.index.backends.remote import RemoteIndex

    return isinstance(index, RemoteIndex) and index.concurrent_writers


def is_parquet(path: Path) -> bool:
    """A Parquet file given by name (Ray ingestion reads these; the local path does not)."""
    return path.suffix.lower() == ".parquet" and path.is_file()


def _scan_parquet(files: list[Path], scan: SourceScan) -> list[Problem]:
    """Validate Parquet rows like JSONL lines (counted into ``scan``); ids repeated within
    the Parquet files are problems (a repeat of a JSONL id replaces it, as an upsert)."""
    import pyarrow.parquet as pq

    problems: list[Problem] = []
    seen: set[str] = set()
    for file in files:
        try:
            groups = pq.ParquetFile(file).num_row_groups
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a broken file vary
            problems.append(Problem(file, None, f"not a readable Parquet file ({exc})"))
            continue
        for group in range(groups):
            for number, doc, problem in parquet_rows(file, group):
                if doc is None or problem is not None:
                    problems.append(Problem(file, number, problem or "invalid"))
                elif doc["id"] in seen:
                    problems.append(Problem(file, number, f"duplicate id {doc['id']!r}"))
                else:
                    seen.add(doc["id"])
                    scan.n_documents += 1
                    scan.n_chars += len(doc["text"])
    return problems


def _parquet_items(files: list[Path]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return [{"file": str(f), "root": str(f.parent), "prefix": "", "group": g}
            for f in files for g in range(pq.ParquetFile(f).num_row_groups)]  # fmt: skip


def _items(files: list[Path], opts: SourceOptions, workers: int) -> list[dict[str, Any]]:
    """The read tasks: one per file; a JSONL file is split into byte ranges (8 MiB, and at
    least 4 per worker down to 64 KiB), so that one big corpus file feeds every actor."""
    items: list[dict[str, Any]] = []
    for file, root, prefix in input_files(files, opts):
        item = {"file": str(file), "root": str(root), "prefix": prefix}
        if file.suffix.lower() != ".jsonl":
            items.append(item)
            continue
        size = file.stat().st_size
        pieces = max(-(-size // (8 << 20)), min(4 * workers, -(-size // (64 << 10))))
        items += [{**item, "start": a, "end": b} for a, b in shards(file, pieces)]
    return items


def _failed(exc: Exception, totals: dict[str, int]) -> EmbedstackError:
    """The error to raise for a run that failed: a worker's typed error, else one saying
    what was committed and that a re-run completes it."""
    cause = _cause(exc)
    if cause is not None:  # a worker's typed error (a model mismatch, bad input)
        return cause
    done = f"{totals['added'] + totals['updated'] + totals['unchanged']} documents"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return EmbedstackError(
        f"Ray ingestion failed after committing {done}: {first}. Run it again: committed "
        "documents are skipped as unchanged, the rest are added"
    )


def _write(index: Index, lookup: LookupEncoder, ds: Any, batch_docs: int,
           on_batch: Callable[[int, int], None] | None) -> IngestResult:  # fmt: skip
    """The single writer: the driver upserts each encoded batch as it arrives."""
    totals = {"added": 0, "updated": 0, "unchanged": 0, "chunks": 0}
    batches = 0
    start = time.perf_counter()
    try:
        for table in ds.iter_batches(batch_size=batch_docs, batch_format="pyarrow"):
            cols = table.to_pydict()
            docs = docs_of(cols)
            feed(lookup, cols)
            try:
                result = index.upsert(docs)
            finally:
                lookup.clear()
            batches += 1
            for key in totals:
                totals[key] += int(getattr(result, key))
            if on_batch is not None:
                on_batch(len(docs), sum(len(d["text"]) for d in docs))
    except EmbedstackError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in its own types
        raise _failed(exc, totals) from exc
    return IngestResult(totals["added"], totals["updated"], totals["unchanged"],
                        totals["chunks"], batches, lookup.misses,
                        time.perf_counter() - start)  # fmt: skip


def _collect(ds: Any, on_batch: Callable[[int, int], None] | None) -> IngestResult:
    """Parallel writers: sum the counts each actor returns for each batch it committed."""
    totals = dict.fromkeys(RESULT_COLUMNS, 0)
    batches = 0
    start = time.perf_counter()
    try:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in table.to_pylist():
                batches += 1
                for key in RESULT_COLUMNS:
                    totals[key] += int(row[key])
                if on_batch is not None:
                    on_batch(int(row["docs"]), int(row["chars"]))
    except EmbedstackError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in its own types
        raise _failed(exc, totals) from exc
    return IngestResult(totals["added"], totals["updated"], totals["unchanged"],
                        totals["chunks"], batches, totals["misses"],
                        time.perf_counter() - start, parallel_writes=True)  # fmt: skip
