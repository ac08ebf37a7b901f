"""BM25 analysis choices against the Lucene references (SciFact 0.686, NFCorpus 0.322).

Compares the token pattern (single characters kept, as Lucene's StandardTokenizer does, or
dropped, as bm25s's default does) and the stemmer (Snowball English vs original Porter) at
Lucene's default parameters k1=1.2, b=0.75. Nothing here is tuned: the grid is the two
principled alternatives for each choice.

    python benchmarks/bm25_analysis.py --datasets ../shared/datasets
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import embedstack.index.tokenize as tokenize
from embedstack.eval import evaluate, load_beir, load_corpus
from embedstack.index.lexical import LexicalIndex

PATTERNS = {"single chars kept (Lucene)": r"(?u)\b\w+\b", "2+ chars (bm25s)": r"(?u)\b\w\w+\b"}
STEMMERS = ("english", "porter")


def ndcg(dataset_dir: Path, pattern: str, stemmer: str) -> float:
    original_pattern, original_stemmer = tokenize.TOKEN_PATTERN, tokenize.Stemmer.Stemmer
    tokenize.TOKEN_PATTERN = pattern
    tokenize.Stemmer.Stemmer = lambda _lang: original_stemmer(stemmer)  # type: ignore[assignment,misc]
    try:
        dataset = load_beir(dataset_dir)
        ids, texts = load_corpus(dataset)
        with tempfile.TemporaryDirectory() as tmp:
            index = LexicalIndex.create(Path(tmp) / "bm25", k1=1.2, b=0.75)
            index.add(np.arange(len(ids)), texts)
            qids = list(dataset.queries)
            results = index.search_many([dataset.queries[q] for q in qids], 1000)
        run = {
            q: {ids[int(k)]: float(s) for s, k in zip(*res, strict=True)}
            for q, res in zip(qids, results, strict=True)
        }
        return evaluate(dataset.qrels, run)["ndcg@10"]
    finally:
        tokenize.TOKEN_PATTERN, tokenize.Stemmer.Stemmer = original_pattern, original_stemmer  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--names", default="scifact,nfcorpus")
    args = parser.parse_args(argv)
    if not args.datasets.is_dir():
        print(f"error: {args.datasets} not found", file=sys.stderr)
        return 2
    rows = []
    print("| dataset | tokens | stemmer | nDCG@10 |\n|---|---|---|---|")
    for name in args.names.split(","):
        for (label, pattern), stemmer in itertools.product(PATTERNS.items(), STEMMERS):
            value = ndcg(args.datasets / name, pattern, stemmer)
            rows.append({"dataset": name, "tokens": label, "stemmer": stemmer, "ndcg@10": value})
            print(f"| {name} | {label} | {stemmer} | {value:.4f} |", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
