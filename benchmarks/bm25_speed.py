"""BM25 speed: embedstack's updatable LexicalIndex against bm25s, in the same process.

Measures, on one BEIR dataset (text = title + " " + text):

* indexing throughput (docs/s): ours = create + one ``add`` (analysis, postings, fsynced
  writes to a temporary directory); bm25s = ``bm25s.tokenize`` + ``BM25.index`` (in memory);
* query throughput (queries/s) over every query of ``queries.jsonl``, k=10, single thread,
  analysis included: ours = ``search_many`` on a freshly opened index ("cold": BM25 impacts are
  computed at query time) and again on the same object ("warm": per-term impacts cached);
  bm25s = ``bm25s.tokenize`` + ``BM25.retrieve(n_threads=1)``.

Each figure is the median of ``--repeats`` runs, alternating the engines. Prints one JSON
object with both engines and the ratios ours/bm25s (higher is better for us).

Example:
    .venv/bin/python benchmarks/bm25_speed.py --datasets ../shared/datasets --dataset scifact
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from embedstack.index.lexical import LexicalIndex
from embedstack.index.tokenize import TOKEN_PATTERN  # noqa: E402


def _load(dataset_dir: Path) -> tuple[list[str], list[str]]:
    with open(dataset_dir / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    with open(dataset_dir / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f if line.strip()]
    return [f"{d.get('title', '')} {d['text']}" for d in docs], queries


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON report."""
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=here.parent / "shared" / "datasets")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    import bm25s
    import Stemmer

    texts, queries = _load(args.datasets / args.dataset)
    keys = np.arange(len(texts), dtype=np.int64)
    stemmer = Stemmer.Stemmer("english")
    names = ("ours_index", "ours_query_cold", "ours_query_warm", "bm25s_index", "bm25s_query")
    times: dict[str, list[float]] = {name: [] for name in names}

    def bm25s_index() -> bm25s.BM25:
        tokens = bm25s.tokenize(
            texts, stopwords="en", stemmer=stemmer, show_progress=False, token_pattern=TOKEN_PATTERN
        )
        model = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        model.index(tokens, show_progress=False)
        return model

    def bm25s_query(model: bm25s.BM25) -> None:
        q = bm25s.tokenize(
            queries,
            stopwords="en",
            stemmer=stemmer,
            show_progress=False,
            return_ids=False,
            token_pattern=TOKEN_PATTERN,
        )
        model.retrieve(q, k=args.k, show_progress=False, n_threads=1)

    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            path = Path(tmp) / f"bm25-{rep}"
            ours = _timed(lambda p=path: LexicalIndex.create(p).add(keys, texts))
            times["ours_index"].append(ours)
            index = LexicalIndex.open(path)
            times["ours_query_cold"].append(_timed(lambda i=index: i.search_many(queries, args.k)))
            times["ours_query_warm"].append(_timed(lambda i=index: i.search_many(queries, args.k)))
            gc.collect()
            start = time.perf_counter()
            model = bm25s_index()
            times["bm25s_index"].append(time.perf_counter() - start)
            times["bm25s_query"].append(_timed(lambda m=model: bm25s_query(m)))

    med = {k: statistics.median(v) for k, v in times.items()}
    n_docs, n_q = len(texts), len(queries)
    report = {
        "dataset": args.dataset,
        "n_docs": n_docs,
        "n_queries": n_q,
        "k": args.k,
        "repeats": args.repeats,
        "ours": {
            "index_docs_per_s": n_docs / med["ours_index"],
            "queries_per_s_cold": n_q / med["ours_query_cold"],
            "queries_per_s_warm": n_q / med["ours_query_warm"],
        },
        "bm25s": {
            "version": bm25s.__version__,
            "index_docs_per_s": n_docs / med["bm25s_index"],
            "queries_per_s": n_q / med["bm25s_query"],
        },
        "ratio_ours_over_bm25s": {
            "index": med["bm25s_index"] / med["ours_index"],
            "query_cold": med["bm25s_query"] / med["ours_query_cold"],
            "query_warm": med["bm25s_query"] / med["ours_query_warm"],
        },
        "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
