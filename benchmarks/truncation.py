"""Truncating embeddings: first-K dimensions as trained, against first-K after a PCA rotation.

Matryoshka training (Kusupati et al. 2022) teaches the first K dimensions to stand on their
own. The older, training-free way to shorten vectors is PCA (sentence-transformers' own
dimensionality-reduction example appends a ``Dense`` layer holding the PCA components): an
orthogonal rotation that orders the dimensions by variance. Kept square and without centring,
the rotation changes no full-dimension cosine, so it costs nothing at full size. This script
measures both on a BEIR test split: nDCG@10 of exact dense search at every dimension with
plain truncation and with the rotation fitted on the corpus's own embeddings (no labels).

Example:
    .venv/bin/python benchmarks/truncation.py --models all-MiniLM-L6-v2 \\
        /work/runs/t17b/scifact-mrl-sup-e2-b32-L256 \\
        --out benchmarks/results/issue17/truncation_scifact.json

``--rotated SOURCE=DIR`` (repeatable) also measures a folder ``embedstack models rotate SOURCE
--corpus DATASET --sample N --seed S`` wrote: its plain truncation is reported next to the
in-script rotation of SOURCE fitted on the same texts (the sample recorded in the folder's
``rotation.json``, drawn again with the same seed), and the largest difference between the
two is printed, which should be 0 up to float rounding.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def pca_rotation(docs: np.ndarray) -> np.ndarray:
    """The ``(dim, dim)`` orthogonal matrix whose rows are the principal axes of ``docs``
    (centred for the fit only), by decreasing variance, each row's largest component positive
    (a sign changes no cosine; fixed so the vectors compare with a ``models rotate`` folder)."""
    centred = docs - docs.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    lead = vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)]
    return (vt * np.where(lead < 0, -1.0, 1.0)[:, None]).astype(np.float32)


def ndcg_at(queries: np.ndarray, docs: np.ndarray, qids: list[str], ids: list[str],
            qrels: dict[str, dict[str, int]], dim: int) -> float:  # fmt: skip
    from embedstack.eval.metrics import evaluate

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    scores = unit(queries[:, :dim]) @ unit(docs[:, :dim]).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    run = {q: {ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}
    return float(evaluate(qrels, run, k_values=(10,))["ndcg@10"])


def rotated_row(source: str, folder: Path, texts: list[str], qids: list[str], ids: list[str],
                dataset: Any, dims: list[int], threads: int) -> dict[str, Any]:  # fmt: skip
    """nDCG@10 of the folder ``models rotate`` wrote, truncated, against the in-script rotation
    of ``source`` fitted on the same sample (its ``rotation.json``: sample size and seed)."""
    from embedstack import Encoder
    from embedstack.encoders.rotate import sample_texts

    record = json.loads((folder / "rotation.json").read_text(encoding="utf-8"))
    questions = [dataset.queries[q] for q in qids]
    base = Encoder(source, threads=threads)
    chosen, n_read = sample_texts(texts, int(record["sample"]), int(record["seed"]))
    if (len(chosen), n_read) != (record["n_texts"], record["n_read"]):
        raise SystemExit(f"{folder} was not fitted on this corpus: {record['n_texts']} of "
                         f"{record['n_read']} texts, here {len(chosen)} of {n_read}")  # fmt: skip
    rotation = pca_rotation(base.encode_documents(chosen))
    docs, queries = (
        base.encode_documents(texts) @ rotation.T,
        base.encode_queries(questions) @ rotation.T,
    )
    model = Encoder(folder, threads=threads)
    folder_docs, folder_queries = model.encode_documents(texts), model.encode_queries(questions)
    gap = float(np.abs(folder_docs - docs).max())
    row: dict[str, Any] = {"source": source, "n_texts": record["n_texts"], "seed": record["seed"],
                           "max_abs_diff_vs_in_script": gap}  # fmt: skip
    for dim in [*dims, model.dim]:
        ours = ndcg_at(folder_queries, folder_docs, qids, ids, dataset.qrels, dim)
        script = ndcg_at(queries, docs, qids, ids, dataset.qrels, dim)
        row[str(dim)] = {"rotated_folder": round(ours, 4), "in_script": round(script, 4)}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path,
                   default=ROOT.parent / "shared" / "datasets" / "scifact")  # fmt: skip
    p.add_argument("--split", default="test")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--dims", default="256,128,64,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--rotated", action="append", default=[], metavar="SOURCE=DIR",
                   help="a `models rotate SOURCE` folder fitted on this corpus")  # fmt: skip
    args = p.parse_args(argv)

    from embedstack import Encoder
    from embedstack.eval import load_beir, load_corpus

    dataset = load_beir(args.dataset, split=args.split)
    ids, texts = load_corpus(dataset)
    qids = [q for q in dataset.qrels if q in dataset.queries]
    dims = [int(d) for d in args.dims.split(",")]
    report: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]),
                              "dataset": dataset.name, "split": args.split,
                              "models": {}}  # fmt: skip
    for name in args.models:
        encoder = Encoder(name, threads=args.threads)
        started = time.perf_counter()
        docs = encoder.encode_documents(texts)
        queries = encoder.encode_queries([dataset.queries[q] for q in qids])
        rotation = pca_rotation(docs)
        row: dict[str, Any] = {"encode_s": round(time.perf_counter() - started, 1)}
        full = ndcg_at(queries, docs, qids, ids, dataset.qrels, encoder.dim)
        rotated_full = ndcg_at(queries @ rotation.T, docs @ rotation.T, qids, ids,
                               dataset.qrels, encoder.dim)  # fmt: skip
        row["full"] = round(full, 4)
        row["full_rotated"] = round(rotated_full, 4)
        for dim in dims:
            plain = ndcg_at(queries, docs, qids, ids, dataset.qrels, dim)
            pca = ndcg_at(queries @ rotation.T, docs @ rotation.T, qids, ids, dataset.qrels, dim)
            row[str(dim)] = {"truncated": round(plain, 4), "pca": round(pca, 4),
                             "retention": round(plain / full, 4),
                             "retention_pca": round(pca / full, 4)}  # fmt: skip
        report["models"][name] = row
        print(name, json.dumps(row), flush=True)
    for pair in args.rotated:
        source, _, folder = pair.partition("=")
        row = rotated_row(source, Path(folder), texts, qids, ids, dataset, dims, args.threads)
        report["models"][f"rotated:{folder}"] = row
        print(f"rotated:{folder}", json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
