"""Measurements of ``embedstack pick``: corpus vectors once per model, queries one at a time.

* The corpus is encoded once per model (cached as ``.npy`` keyed by the model identity and
  the exact texts, like :func:`embedstack.eval.index_runner.cached_corpus_embeddings`);
  every dimension (:func:`embedstack.vectors.truncate`) and precision
  (:class:`~embedstack.vectorset.VectorSet`) is derived from those float32 vectors. When the
  vectors come from the cache, throughput is timed on a sample of :data:`TIMING_SAMPLE`
  documents instead.
* Each query is encoded alone, once per model, timed (wall clock and process CPU time, all
  threads). Each candidate then searches with that vector alone, timed; for hybrid the BM25
  search of the query (timed once, it is the same for every model) and the RRF fusion
  (:func:`embedstack.fusion.rrf`, k = 60) are added. A candidate's latency for a query is the
  sum of the stages it runs: what one request pays, measured stage by stage.
* Binary precision is Hamming search over sign bits without rescoring (32x smaller).
* Index bytes per document: the vector set's bytes (:attr:`VectorSet.nbytes`, calibration
  included) over the documents, plus the BM25 postings on disk for ``bm25``/``hybrid``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack import vectors
from embedstack.eval.pick.candidates import CandidateSpec
from embedstack.eval.pick.progress import Steps
from embedstack.fusion import rrf
from embedstack.vectorset import VectorSet

__all__ = [
    "DEPTH",
    "Bm25",
    "Bm25Run",
    "CandidateRun",
    "ModelRun",
    "OutOfTime",
    "cached_corpus",
    "encode_corpus",
    "encode_queries",
    "measure",
    "slug",
    "vector_set",
]

DEPTH = 100  # documents ranked per query: enough for recall@100, nDCG@10 and MRR@10
TIMING_SAMPLE = 128
_CHUNK = 256
_DEADLINE_CHUNK = 32  # smaller chunks when a deadline is checked between them


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "x"


@dataclass
class ModelRun:
    """One model's corpus and query vectors with their timings.

    Attributes:
        doc_vectors: ``(n_docs, full_dim) float32``, L2-normalized.
        query_vectors: ``(n_queries, full_dim) float32``.
        query_wall: ``(n_queries,)`` seconds to encode each query alone.
        query_cpu: ``(n_queries,)`` process CPU seconds of the same.
    """

    name: str
    model_id: str
    doc_vectors: np.ndarray
    encode_s: float
    docs_per_s: float
    encode_timing: str
    query_vectors: np.ndarray
    query_wall: np.ndarray
    query_cpu: np.ndarray


@dataclass
class Bm25Run:
    """BM25 results of every query (doc ids best first), their timings, bytes per doc."""

    rankings: list[list[tuple[str, float]]]
    wall: np.ndarray
    cpu: np.ndarray
    bytes_per_doc: float


@dataclass
class CandidateRun:
    """What one candidate did: its run, per-query latency and CPU seconds, size."""

    run: dict[str, dict[str, float]]
    wall: np.ndarray
    cpu: np.ndarray
    bytes_per_doc: float


def _texts_key(model_id: str, texts: list[str]) -> str:
    digest = hashlib.sha256(model_id.encode())
    for text in texts:
        digest.update(b"\0" + text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _load_cached(folder: Path, key: str, n: int) -> np.ndarray | None:
    try:
        stamp = json.loads((folder / "pick-source.json").read_text(encoding="utf-8"))
        if stamp.get("key") != key:
            return None
        matrix = np.load(folder / "embeddings.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return matrix if matrix.ndim == 2 and matrix.shape[0] == n else None


def _save_cached(folder: Path, key: str, matrix: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pick-source.json").unlink(missing_ok=True)
    with open(folder / "embeddings.npy.tmp", "wb") as handle:
        np.save(handle, matrix, allow_pickle=False)
    os.replace(folder / "embeddings.npy.tmp", folder / "embeddings.npy")
    (folder / "pick-source.json").write_text(json.dumps({"key": key}), encoding="utf-8")


class OutOfTime(Exception):
    """A corpus encoding passed its deadline: ``done`` of ``total`` documents in ``seconds``."""

    def __init__(self, done: int, total: int, seconds: float) -> None:
        super().__init__(f"stopped after {done} of {total} documents")
        self.done, self.total, self.seconds = done, total, seconds


def _encode_docs(
    encoder: Any, texts: list[str], steps: Steps, label: str, deadline: float | None = None
) -> np.ndarray:
    blocks = []
    chunk_size = _CHUNK if deadline is None else _DEADLINE_CHUNK
    start = time.perf_counter()
    with steps.task(label, len(texts)) as advance:
        for first in range(0, len(texts), chunk_size):
            if deadline is not None and time.perf_counter() > deadline:
                raise OutOfTime(first, len(texts), time.perf_counter() - start)
            chunk = texts[first : first + chunk_size]
            blocks.append(np.asarray(encoder.encode_documents(chunk), dtype=np.float32))
            advance(len(chunk))
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)


def _load_eval_cache(encoder: Any, beir: Any, root: Path, ids: list[str]) -> np.ndarray | None:
    """The vectors ``embedstack eval --mode dense`` cached for this dataset and model, if any
    (its folder and key: :func:`embedstack.eval.index_runner.cached_corpus_embeddings`)."""
    from embedstack.eval.index_runner import _config_key, _stamp_matches

    folder = root / slug(f"{beir.name}-{encoder.name}")
    key = _config_key(beir, {"model_id": encoder.model_id, "kind": "corpus-embeddings"})
    if not _stamp_matches(folder / "eval-source.json", key):
        return None
    try:
        cached_ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        matrix = np.load(folder / "embeddings.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if [str(i) for i in cached_ids] != ids or matrix.ndim != 2 or len(matrix) != len(ids):
        return None
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _folder(encoder: Any, texts: list[str], cache: Path, precision: str) -> tuple[Path, str]:
    ident = encoder.model_id if precision == "float32" else f"{encoder.model_id}|{precision}"
    key = _texts_key(ident, texts)
    return cache / "pick" / f"{slug(encoder.name)}-{key[:16]}", key


def cached_corpus(
    encoder: Any,
    texts: list[str],
    cache: Path,
    precision: str = "float32",
    *,
    beir: Any = None,
    ids: list[str] | None = None,
) -> np.ndarray | None:
    """The corpus vectors of ``encoder`` with ``precision`` weights, when cached.

    Pick's own cache (``cache/pick``) is keyed by the model identity, the weights' precision
    and the exact texts; for float32 weights and a judged BEIR dataset (``beir`` and its
    ``ids``) the vectors ``embedstack eval`` cached under ``cache`` count too.
    """
    folder, key = _folder(encoder, texts, cache, precision)
    matrix = _load_cached(folder, key, len(texts))
    if matrix is None and precision == "float32" and beir is not None and ids is not None:
        matrix = _load_eval_cache(encoder, beir, cache, ids)
    return matrix


def corpus_vectors(encoder: Any, texts: list[str], cache: Path) -> np.ndarray:
    """``encoder``'s vectors of ``texts`` from :func:`cached_corpus`, else encoded and cached
    there (the cache ``embedstack pick`` fills, keyed by the model and the exact texts)."""
    matrix = cached_corpus(encoder, texts, cache)
    if matrix is None:
        matrix = np.ascontiguousarray(encoder.encode_documents(texts), dtype=np.float32)
        _save_cached(*_folder(encoder, texts, cache, "float32"), matrix)
    return matrix


def encode_corpus(
    encoder: Any,
    texts: list[str],
    cache: Path,
    steps: Steps,
    *,
    seed: int = 0,
    beir: Any = None,
    ids: list[str] | None = None,
    precision: str = "float32",
    timed: tuple[float, str] | None = None,
    deadline: float | None = None,
) -> tuple[np.ndarray, float, str]:
    """``((n, full_dim) float32 vectors, encode seconds for the whole corpus, timing note)``.

    Loads cached vectors (:func:`cached_corpus`) when there are; the throughput is then
    ``timed`` (seconds and a note, e.g. from the plan's probe) or timed on a seeded sample
    of :data:`TIMING_SAMPLE` documents.

    Raises:
        OutOfTime: the encoding passed ``deadline`` (a ``time.perf_counter()`` value).
    """
    if hasattr(encoder, "show_progress"):
        encoder.show_progress = False
    folder, key = _folder(encoder, texts, cache, precision)
    matrix = cached_corpus(encoder, texts, cache, precision, beir=beir, ids=ids)
    if matrix is None:
        start = time.perf_counter()
        label = f"encoding corpus with {encoder.name}" + (
            f" ({precision})" if precision != "float32" else ""
        )
        matrix = _encode_docs(encoder, texts, steps, label, deadline)
        encode_s = time.perf_counter() - start
        _save_cached(folder, key, matrix)
        return matrix, encode_s, f"full corpus ({len(texts)} documents)"
    if timed is not None:
        return matrix, timed[0], timed[1]
    rng = np.random.default_rng(seed)
    size = min(TIMING_SAMPLE, len(texts))
    sample = [texts[i] for i in sorted(rng.choice(len(texts), size, replace=False))]
    start = time.perf_counter()
    encoder.encode_documents(sample)
    encode_s = (time.perf_counter() - start) * len(texts) / size
    return matrix, encode_s, f"vectors from cache; throughput timed on {size} sampled documents"


def encode_queries(
    encoder: Any, queries: list[str], steps: Steps | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query encoded alone: ``((n, full_dim) vectors, wall seconds, CPU seconds)``."""
    wall = np.zeros(len(queries))
    cpu = np.zeros(len(queries))
    rows = []
    steps = steps or Steps(False)
    with steps.task(f"encoding queries with {encoder.name}", len(queries)) as advance:
        for i, text in enumerate(queries):
            t0, c0 = time.perf_counter(), time.process_time()
            rows.append(np.asarray(encoder.encode_queries([text]), dtype=np.float32)[0])
            wall[i], cpu[i] = time.perf_counter() - t0, time.process_time() - c0
            advance(1)
    return np.asarray(rows, dtype=np.float32), wall, cpu


class Bm25:
    """A BM25 index of the corpus in ``folder`` (:class:`~embedstack.index.lexical.LexicalIndex`),
    removed by :meth:`close`."""

    def __init__(self, ids: list[str], texts: list[str], folder: Path) -> None:
        from embedstack.index.lexical import LexicalIndex

        if folder.exists():
            shutil.rmtree(folder)
        self.ids, self.folder = ids, folder
        self.index: Any = LexicalIndex.create(folder)
        self.index.add(np.arange(len(texts), dtype=np.int64), texts)
        self.bytes_per_doc = self.index.stats().bytes_on_disk / max(len(texts), 1)

    def run(self, queries: list[str]) -> Bm25Run:
        """Search each query alone, timed."""
        rankings = []
        wall = np.zeros(len(queries))
        cpu = np.zeros(len(queries))
        for i, query in enumerate(queries):
            t0, c0 = time.perf_counter(), time.process_time()
            scores, keys = self.index.search(query, DEPTH)
            wall[i], cpu[i] = time.perf_counter() - t0, time.process_time() - c0
            rankings.append(
                [(self.ids[int(k)], float(s)) for s, k in zip(scores, keys, strict=True)]
            )
        return Bm25Run(rankings, wall, cpu, self.bytes_per_doc)

    def close(self) -> None:
        """Drop the index and its folder."""
        self.index = None
        shutil.rmtree(self.folder, ignore_errors=True)


def vector_set(model: ModelRun, cand: CandidateSpec) -> VectorSet:
    """The candidate's document vectors at its dimension and precision."""
    docs = model.doc_vectors
    if cand.dim is not None and cand.dim != docs.shape[1]:
        docs = vectors.truncate(docs, cand.dim)
    return VectorSet.from_float(docs, cand.precision or "float32", rescore=False)


def measure(
    cand: CandidateSpec,
    qids: list[str],
    ids: list[str],
    model: ModelRun | None,
    bm25: Bm25Run | None,
    advance: Any = None,
) -> CandidateRun:
    """Search every query with ``cand`` one at a time; see the module docstring."""
    n = len(qids)
    wall = np.zeros(n)
    cpu = np.zeros(n)
    run: dict[str, dict[str, float]] = {}
    if cand.mode == "bm25":
        assert_bm25 = _need(bm25, "bm25")
        for i, qid in enumerate(qids):
            run[qid] = dict(assert_bm25.rankings[i])
            if advance is not None:
                advance(1)
        return CandidateRun(
            run, assert_bm25.wall.copy(), assert_bm25.cpu.copy(), assert_bm25.bytes_per_doc
        )
    model = _need(model, "model")
    store = vector_set(model, cand)
    queries = model.query_vectors
    if cand.dim is not None and cand.dim != queries.shape[1]:
        queries = vectors.truncate(queries, cand.dim)
    hybrid = cand.mode == "hybrid"
    lexical = _need(bm25, "bm25") if hybrid else None
    for i, qid in enumerate(qids):
        t0, c0 = time.perf_counter(), time.process_time()
        scores, index = store.search(queries[i : i + 1], DEPTH)
        dense = [(ids[int(j)], float(s)) for s, j in zip(scores[0], index[0], strict=True)]
        if lexical is not None:
            fused = rrf([[d for d, _ in dense], [d for d, _ in lexical.rankings[i]]], k=60)
            dense = fused[:DEPTH]
        wall[i], cpu[i] = time.perf_counter() - t0, time.process_time() - c0
        run[qid] = dict(dense)
        if advance is not None:
            advance(1)
    wall += model.query_wall
    cpu += model.query_cpu
    size = store.nbytes / max(len(store), 1)
    if lexical is not None:
        wall += lexical.wall
        cpu += lexical.cpu
        size += lexical.bytes_per_doc
    return CandidateRun(run, wall, cpu, size)


def _need(value: Any, what: str) -> Any:
    if value is None:  # pragma: no cover - the orchestrator always provides it
        raise RuntimeError(f"candidate needs the {what} measurements")
    return value
