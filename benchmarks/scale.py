"""The index at scale (issue 18): N chunks of real sentences through each backend and its peers.

Data: every sentence of the shared SciFact and NFCorpus corpora, recombined 3-8 per document
(seeded, so every backend and peer sees the same documents, generated batch by batch);
queries are the datasets' real queries. Encoder: the hashing encoder (``hash-256``) so that
storage cost is isolated; ``--model`` names a real model instead. A real model encodes the
corpus once per run: the first child times its encoding apart from the rest of its ingest
(``encode_s``, ``storage_s``, ``storage_overhead_pct_of_encoding``: measured, not
extrapolated) and records the vectors, which the later children replay (their ingest is
then storage only, ``vectors_replayed``), and FAISS searches exactly the local index's chunk
vectors. Queries are always encoded live.

Backends (``--backends``, comma separated; each runs in its own process so peak RSS is its own):

* ``local``: the local index, exact dense search;
* ``local-hnsw``: the local index with ``ann="hnsw"`` (recall@10 against ``local``'s exact
  results when both ran);
* ``peers``: bm25s (BM25, Lucene method) and FAISS ``IndexFlatIP`` / ``IndexHNSWFlat`` (M=32,
  efConstruction=128, efSearch=128) over the same vectors (``--peers bm25s`` runs bm25s alone,
  without encoding the corpus or building the HNSW graph, for BM25 comparisons at 1M;
  ``--peers bm25s,faiss-flat`` leaves out only FAISS's HNSW build, tens of minutes at 1M);
* ``pg``, ``milvus``: ``Index.create(uri, ...)`` on PostgreSQL (``--pg-uri``; by default a
  ``pgserver`` started in the work directory) or Milvus (``--milvus-uri``). Skipped, with the
  reason, where the URI is refused or not routed to a backend.

Per backend: ingest (documents and chunks per second, batches of ``--batch``), bytes on disk
per chunk, open time (reader and writer, wall and CPU seconds) and first-query time,
single-query latency p50/p99 (ms, query encoding included, ``k=10``) for bm25, dense and
hybrid, HNSW recall@10, and peak RSS. Every backend and peer runs with ``--threads``
BLAS/OpenMP threads (1 by default: on a shared 2-core box multi-threaded BLAS makes a
1x256 @ 256x2000 product 100x slower). With ``--encode-sample`` > 0 the default model
(all-MiniLM-L6-v2) encodes a sample of documents; its rate, extrapolated to N, gives the
local storage overhead as a percent of encoding time
(an extrapolation, not a measured full encode).

Latencies are reported as wall clock and as the process's CPU time (``cpu_*``), which the
load of a shared machine spoils least. Each backend and the peers run in separate processes,
one after the other, so a ratio between them also compares two machine states; for the
ratios against bm25s and FAISS flat, ``peers_interleaved.py`` runs both sides in one process,
query by query. ``--reuse DIR`` keeps the local indexes in ``DIR`` and
measures an index found there without ingesting it again (open and queries only); with
``--reuse``, an index already at ``--milvus-uri`` or ``--pg-uri`` is measured the same way.
``--baseline-src OTHER/src`` measures the local index a second time with another checkout's
code, just before ours, in the same run (a before/after comparison under the same load).

Example:
    .venv/bin/python benchmarks/scale.py --n 20000 --backends local,local-hnsw,peers
    .venv/bin/python benchmarks/scale.py --n 20000 --backends local,peers --reuse /tmp/s20k
    .venv/bin/python benchmarks/scale.py --n 20000 --backends local,peers --reuse /tmp/s20k \
        --baseline-src ../main/src
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

# the source tree the children measure: this checkout's, or --baseline-src's (see main)
sys.path.insert(0, os.environ.get("SCALE_SRC") or str(Path(__file__).resolve().parents[1] / "src"))

from embedstack.integrations._encoders import WrappedEncoder  # noqa: E402

HERE = Path(__file__).resolve().parents[1]
DATASETS = ("scifact", "nfcorpus")
BACKENDS = ("local", "local-hnsw", "peers", "pg", "milvus")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")


# --- data ------------------------------------------------------------------------------------


def sentences(root: Path) -> list[str]:
    """Every sentence (over 20 characters) of the datasets' corpora, in file order."""
    out: list[str] = []
    for name in DATASETS:
        with open(root / name / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    text = json.loads(line)["text"]
                    out += [s for s in _SENTENCE.split(text) if len(s) > 20]
    return out


def queries(root: Path, n: int) -> list[str]:
    """``n`` real queries, alternating the datasets, cycling when there are fewer."""
    per = []
    for name in DATASETS:
        with open(root / name / "queries.jsonl", encoding="utf-8") as f:
            per.append([json.loads(line)["text"] for line in f if line.strip()])
    mixed = [q for pair in zip(*per, strict=False) for q in pair]
    return [mixed[i % len(mixed)] for i in range(n)]


def batches(pool: list[str], n: int, size: int, seed: int = 18) -> Iterator[list[dict[str, Any]]]:
    """Documents ``d0 .. d{n-1}`` of 3-8 sentences each, ``size`` per batch (deterministic)."""
    for start in range(0, n, size):
        rng = np.random.default_rng([seed, start])
        stop = min(start + size, n)
        counts = rng.integers(3, 9, size=stop - start)
        picks = rng.integers(0, len(pool), size=int(counts.sum()))
        ends = np.cumsum(counts)
        yield [
            {"id": f"d{start + i}", "text": " ".join(pool[j] for j in picks[e - c : e])}
            for i, (c, e) in enumerate(zip(counts.tolist(), ends.tolist(), strict=True))
        ]


# --- measuring -------------------------------------------------------------------------------


def latency(fn: Callable[[str], object], qs: list[str], warmup: int = 10) -> dict[str, float]:
    """p50/p99/mean of single calls, in milliseconds, after ``warmup`` untimed calls: wall
    clock, and the process's CPU time (``cpu_*``: what a shared machine's load spoils
    least)."""
    for q in qs[:warmup]:
        fn(q)
    times, cpu = [], []
    for q in qs:
        t, c = time.perf_counter(), time.process_time()
        fn(q)
        cpu.append((time.process_time() - c) * 1000)
        times.append((time.perf_counter() - t) * 1000)
    out = {}
    for prefix, values in (("", times), ("cpu_", cpu)):
        out[f"{prefix}p50_ms"] = round(float(np.percentile(values, 50)), 3)
        out[f"{prefix}p99_ms"] = round(float(np.percentile(values, 99)), 3)
        out[f"{prefix}mean_ms"] = round(float(np.mean(values)), 3)
    return out


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def encoder_for(model: str, work: Path | None = None) -> Any:
    """The run's encoder. A real model (not ``hash-256``) comes wrapped in :class:`Recorded`
    when ``work`` is given: the first child records every document vector it encodes, the
    later ones replay them instead of encoding the corpus again."""
    from embedstack import HashEncoder
    from embedstack.encoders import load_encoder

    if model == "hash-256":
        return HashEncoder(256)
    inner = load_encoder(model)
    return inner if work is None else Recorded(inner, work / "doc_vectors.npz")


class Recorded(WrappedEncoder):
    """A real model's encoder that times its document encoding (``encode_s``) and records
    the vectors by text, or, when ``cache`` holds an earlier child's vectors, replays them
    (texts it has not seen, the queries among them, are encoded live). With a real model the
    corpus is encoded once per run, not once per backend, and the first child's ingest splits
    into encoding and storage time, both measured. Identity, queries and tokenizer are the
    wrapped model's."""

    def __init__(self, inner: Any, cache: Path) -> None:
        super().__init__(inner)
        self._cache, self.encode_s = cache, 0.0
        self._seen: dict[str, np.ndarray] = {}
        self.replaying = cache.exists()
        if self.replaying:
            with np.load(cache, allow_pickle=False) as z:
                self._seen = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))

    def encode_documents(self, texts: Any) -> np.ndarray:
        texts = list(texts)
        keys = [_text_key(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._seen}
        if missing:
            t0 = time.perf_counter()
            vecs = np.asarray(self.base.encode_documents(list(missing.values())), np.float32)
            self.encode_s += time.perf_counter() - t0
            self._seen.update(zip(missing, vecs, strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._seen[k] for k in keys])

    def recorded(self) -> np.ndarray:
        """Every vector recorded by the first child, in the order it encoded them."""
        return np.stack(list(self._seen.values()))

    def save(self) -> None:
        """Keep the recorded vectors for the later children (the first child only)."""
        if not self.replaying and self._seen:
            keys = np.array(list(self._seen), dtype=np.str_)
            np.savez(self._cache, keys=keys, vectors=self.recorded())


def _text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# --- backends (each in a child process) ------------------------------------------------------


def run_index(args: argparse.Namespace, backend: str, target: str) -> dict[str, Any]:
    """Ingest, reopen and query one embedstack index at ``target`` (a path or a URI)."""
    from embedstack.errors import EmbedstackError
    from embedstack.index import Index

    pool = sentences(args.datasets)
    encoder = encoder_for(args.model, args.work)
    ann = "hnsw" if backend == "local-hnsw" else None
    local = "://" not in target
    if local and args.reuse is not None:  # the index kept by an earlier run, if any
        target = str(args.reuse / backend)
        if (Path(target) / "manifest.json").exists():
            return measure_index(args, backend, target, {"n_docs": args.n, "reused": target})
    if not local and args.reuse is not None:  # an engine's index, if one is at the URI
        try:
            Index.open(target, encoder=encoder, readonly=True).close()
        except EmbedstackError:
            pass
        else:
            return measure_index(args, backend, target, {"n_docs": args.n, "reused": target})
    try:
        idx = Index.create(target, encoder=encoder, ann=ann)
    except EmbedstackError as exc:
        return {"skipped": f"Index.create({target!r}) refused: {exc}"}
    stray = Path(target.split("://")[0] + ":")  # relative to the work folder (our cwd)
    if not local and stray.exists():
        idx.close()
        shutil.rmtree(stray, ignore_errors=True)
        return {"skipped": f"Index.create({target!r}) made a local folder: scheme not routed"}
    t0, n_chunks, done = time.perf_counter(), 0, 0
    for batch in batches(pool, args.n, args.batch):
        n_chunks += idx.add(batch).chunks
        done += len(batch)
        if done % 100_000 == 0:  # a long ingest's pace, in WORK/NAME.stderr (not the result)
            print(f"{backend}: {done} documents in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    ingest = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx.close()  # a writer's close saves what it keeps in memory (the HNSW graph's rows)
    close_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "n_docs": args.n,
        "n_chunks": n_chunks,
        "ingest_s": round(ingest, 2),
        "ingest_docs_per_s": round(args.n / ingest, 1),
        "ingest_chunks_per_s": round(n_chunks / ingest, 1),
        "close_s": round(close_s, 3),
    }
    if isinstance(encoder, Recorded):  # a real model: encoding and storage, both measured
        out["encode_s"] = round(encoder.encode_s, 2)
        out["vectors_replayed"] = encoder.replaying
        if not encoder.replaying:
            storage = ingest - encoder.encode_s
            out["storage_s"] = round(storage, 2)
            out["storage_overhead_pct_of_encoding"] = round(100 * storage / encoder.encode_s, 2)
            encoder.save()
    return measure_index(args, backend, target, out)


def measure_index(
    args: argparse.Namespace, backend: str, target: str, out: dict[str, Any]
) -> dict[str, Any]:
    """Open the built index at ``target`` (writer, then reader: each timed, CPU seconds
    too) and measure its queries."""
    import embedstack
    from embedstack.index import Index

    out["src"] = str(Path(embedstack.__file__).resolve().parents[1])  # the code measured

    qs = queries(args.datasets, args.queries)
    encoder = encoder_for(args.model)
    local = "://" not in target
    for key, readonly in (("open_readonly", True), ("open", False)):
        t0, c0 = time.perf_counter(), time.process_time()
        idx = Index.open(target, encoder=encoder, readonly=readonly)
        out[f"{key}_s"] = round(time.perf_counter() - t0, 4)
        out[f"{key}_cpu_s"] = round(time.process_time() - c0, 4)
        if readonly:
            idx.close()
    stats = idx.stats()
    n_chunks = stats.n_chunks
    t0 = time.perf_counter()
    idx.search(qs[0], mode="dense", k=10)
    out["first_dense_query_s"] = round(time.perf_counter() - t0, 4)
    out["n_chunks"] = n_chunks
    out["bytes"] = stats.bytes
    out["bytes_per_chunk"] = round(stats.bytes["total"] / n_chunks, 1) if local else None
    lexical = getattr(next((f for f in idx.fields if f.name == "bm25"), None), "lexical", None)
    if lexical is not None:
        out["bm25_segments"] = lexical.stats().n_segments
    for mode in ("bm25", "dense", "hybrid"):
        out[mode] = latency(lambda q, m=mode: idx.search(q, mode=m, k=10), qs)
    dense_ids = [[h.doc_id for h in idx.search(q, mode="dense", k=10)] for q in qs]
    exact_file = args.work / "exact_dense_ids.json"
    if backend == "local":
        exact_file.write_text(json.dumps(dense_ids))
    elif exact_file.exists():
        out["recall_at_10_vs_local_exact"] = recall(dense_ids, json.loads(exact_file.read_text()))
    idx.close()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def recall(got: list[list[Any]], exact: list[list[Any]]) -> float:
    return round(
        float(
            np.mean(
                [len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(got, exact, strict=True)]
            )
        ),
        4,
    )


def bm25s_peer(texts: list[str]) -> tuple[float, Callable[[str], object]]:
    """bm25s over ``texts`` as the local index analyses them (Lucene BM25, k1 1.2, b 0.75,
    its token pattern, English stopwords and Snowball stemmer): the seconds its index took,
    and a one-query top-10 search (one thread)."""
    import bm25s
    import Stemmer

    from embedstack.index.tokenize import TOKEN_PATTERN

    kw = {"stopwords": "en", "stemmer": Stemmer.Stemmer("english"), "show_progress": False}
    t0 = time.perf_counter()
    model = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    model.index(bm25s.tokenize(texts, token_pattern=TOKEN_PATTERN, **kw), show_progress=False)
    build_s = time.perf_counter() - t0

    def query(q: str) -> object:
        tokens = bm25s.tokenize([q], token_pattern=TOKEN_PATTERN, return_ids=False, **kw)
        if not tokens[0]:
            return None
        return model.retrieve(tokens, k=10, show_progress=False, n_threads=1)

    return build_s, query


def run_peers(args: argparse.Namespace) -> dict[str, Any]:
    """bm25s and FAISS (flat, HNSW) on the same documents and queries (``--peers`` picks)."""
    import bm25s

    picked = args.peers.split(",")
    with_faiss = "faiss" in picked or "faiss-flat" in picked
    pool, qs = sentences(args.datasets), queries(args.datasets, args.queries)
    encoder = encoder_for(args.model, args.work)
    # a real model's recorded vectors are the local index's chunks: FAISS searches exactly
    # what the local index searches (the hashing encoder's documents are one chunk each)
    recorded = isinstance(encoder, Recorded) and encoder.replaying
    texts: list[str] = []
    vecs: list[np.ndarray] = [encoder.recorded()] if recorded and with_faiss else []
    encode_s = 0.0
    for batch in batches(pool, args.n, args.batch):
        part = [d["text"] for d in batch]
        texts += part
        if with_faiss and not recorded:
            t0 = time.perf_counter()
            vecs.append(np.asarray(encoder.encode_documents(part), dtype=np.float32))
            encode_s += time.perf_counter() - t0
    x = np.ascontiguousarray(np.concatenate(vecs)) if with_faiss else None
    del vecs
    bm25_build, bm25_query = bm25s_peer(texts)
    del texts
    out: dict[str, Any] = {
        "n_docs": args.n,
        "bm25s": {
            "version": bm25s.__version__,
            "index_s": round(bm25_build, 2),
            **latency(bm25_query, qs),
        },  # fmt: skip
    }
    if x is not None and args.model == "hash-256":
        out["hash_encode_docs_per_s"] = round(args.n / encode_s, 1)
    if x is not None:
        out["faiss_vectors"] = int(x.shape[0])
        out.update(run_faiss(args, x, qs, encoder, hnsw="faiss" in picked))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run_faiss(
    args: argparse.Namespace, x: np.ndarray, qs: list[str], encoder: Any, *, hnsw: bool = True
) -> dict[str, Any]:
    """FAISS flat and (``hnsw``) HNSW over the documents' vectors ``x``."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    out: dict[str, Any] = {}
    qv = {q: np.asarray(encoder.encode_queries([q]), dtype=np.float32) for q in qs}
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    out["faiss_flat"] = latency(lambda q: flat.search(encoder.encode_queries([q]), 10), qs)
    exact = [flat.search(qv[q], 10)[1][0].tolist() for q in qs]
    flat.reset()  # free its memory before the HNSW build
    if not hnsw:
        return out
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 128
    hnsw.add(x)
    build_s = time.perf_counter() - t0
    hnsw.hnsw.efSearch = 128
    got = [hnsw.search(qv[q], 10)[1][0].tolist() for q in qs]
    out["faiss_hnsw"] = {
        "build_s": round(build_s, 2),
        "recall_at_10_vs_flat": recall(got, exact),
        **latency(lambda q: hnsw.search(encoder.encode_queries([q]), 10), qs),
    }
    return out


def pg_uri(args: argparse.Namespace) -> str | None:
    if args.pg_uri:
        return str(args.pg_uri)
    try:
        import pgserver
    except ImportError:
        return None
    server = pgserver.get_server(args.work / "pgdata", cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    return str(server.get_uri())


def child(args: argparse.Namespace) -> dict[str, Any]:
    backend = args.child
    if backend == "peers":
        return run_peers(args)
    if backend in ("local", "local-hnsw"):
        return run_index(args, backend, str(args.work / backend))
    if backend == "pg":
        uri = pg_uri(args)
        if uri is None:
            return {"skipped": "no --pg-uri and pgserver is not installed"}
        return run_index(args, backend, uri)
    if not args.milvus_uri:
        return {"skipped": "no --milvus-uri given (the URI Index.create routes to Milvus)"}
    return run_index(args, backend, str(args.milvus_uri))


def encode_overhead(args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    """Local storage time as a percent of the default model's (extrapolated) encoding time."""
    from embedstack.encoders import load_encoder

    pool = sentences(args.datasets)
    sample = [d["text"] for d in next(batches(pool, args.encode_sample, args.encode_sample))]
    model = load_encoder()
    model.encode_documents(sample[:8])
    t0 = time.perf_counter()
    model.encode_documents(sample)
    rate = len(sample) / (time.perf_counter() - t0)
    out: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2",
        "sample_docs": len(sample),
        "model_docs_per_s": round(rate, 1),
        "note": "model encoding time extrapolated from the sample to N",
    }
    local, peers = report.get("local", {}), report.get("peers", {})
    if "ingest_s" in local and "hash_encode_docs_per_s" in peers:
        storage_s = local["ingest_s"] - args.n / peers["hash_encode_docs_per_s"]
        out["local_storage_s"] = round(storage_s, 2)
        out["model_encode_s_extrapolated"] = round(args.n / rate, 1)
        out["storage_overhead_pct_of_encoding"] = round(100 * storage_s * rate / args.n, 2)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--model", default="hash-256")
    parser.add_argument("--backends", default="local,local-hnsw,peers,pg,milvus")
    parser.add_argument("--datasets", type=Path, default=HERE.parent / "shared" / "datasets")
    parser.add_argument(
        "--peers",
        default="bm25s,faiss",
        help="which peers the peers backend runs: bm25s, faiss (flat and HNSW) or faiss-flat",
    )
    parser.add_argument("--pg-uri", default=None)
    parser.add_argument("--milvus-uri", default=None)
    parser.add_argument("--encode-sample", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/OpenMP threads of every backend and peer"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="keep the local indexes in this folder and, when one is there already, skip "
        "its ingest and measure only open and queries; an engine's index found at its URI "
        "(--milvus-uri, --pg-uri) is measured the same way",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also measure the local index with the embedstack source tree in this folder "
        "(another checkout's src/), reported as local_baseline, just before ours: a before/"
        "after comparison in one run, on the same index (with --reuse) and the same load",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (a temp dir)")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n < 1 or args.batch < 1 or args.queries < 1:
        parser.error("--n, --batch and --queries must be positive")
    if args.child:
        print(json.dumps(child(args)))
        return
    if not set(args.peers.split(",")) <= {"bm25s", "faiss", "faiss-flat"}:
        parser.error(f"--peers takes bm25s, faiss and/or faiss-flat, got {args.peers!r}")
    chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    out = args.out or HERE / "benchmarks" / "results" / "issue18" / f"scale_{args.n}.json"
    report: dict[str, Any] = {"n": args.n, "batch": args.batch, "queries": args.queries,
                              "model": args.model, "cpus": os.cpu_count(),
                              "threads": args.threads,
                              "command": " ".join(sys.argv)}  # fmt: skip
    runs = [(backend, backend, HERE / "src") for backend in chosen]
    if args.baseline_src is not None:  # right before the local index measured with ours
        at = chosen.index("local") if "local" in chosen else 0
        runs.insert(at, ("local_baseline", "local", args.baseline_src.resolve()))
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for (
            name,
            backend,
            src,
        ) in runs:  # local before local-hnsw: its exact results give the recall
            given = argv if argv is not None else sys.argv[1:]
            cmd = [sys.executable, __file__, *given, "--child", backend, "--work", work]
            if args.reuse is not None:  # the children run in the work folder
                cmd += ["--reuse", str(args.reuse.resolve())]
            threads = str(args.threads)
            env = {**os.environ, "PYTHONPATH": str(src), "SCALE_SRC": str(src),
                   "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                   "MKL_NUM_THREADS": threads}  # fmt: skip
            log = Path(work) / f"{name}.stderr"  # readable while the child runs
            with open(log, "w", encoding="utf-8") as err:
                done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                      check=False, cwd=work, env=env)  # fmt: skip
            try:
                report[name] = json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
                report[name] = {"error": tail[-5:]}
            print(name, json.dumps(report[name]), file=sys.stderr, flush=True)
    if args.encode_sample > 0:
        report["encoding_overhead"] = encode_overhead(args, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
