"""The server's pipeline search against ``Pipeline.trace``: same index, same queries, one run.

Issue 15's must-show: the server, serving ``--reranker DIR``, answers index searches with a
reranking pipeline loading the model once, with p50 within 10% of ``Pipeline.trace`` on
the same index in the same run.

One process holds both sides: a ``Pipeline`` built here (its own cross-encoder loaded
from ``--reranker``, its own readonly index handle) and the HTTP server (``create_app`` under
uvicorn on 127.0.0.1, in a thread, serving the index and ``rerankers=(DIR,)`` as
``embedstack serve --index DIR --reranker DIR`` does; it loads everything before
listening). Each query runs through both, alternating which goes first; the trace side is
timed around ``Pipeline.trace``, the server side around the whole HTTP round trip
(``httpx``, JSON both ways). Both must return the same ids. ``embedstack.rerank.load_reranker``
is counted: the server must load its reranker once, at start, and never while serving.

Corpus: ``--dataset DIR`` (a BEIR folder; the index is built in ``--index`` once, with
``--model``), else a seeded synthetic corpus indexed with a hashing encoder (a quick
check of the script, not a measurement). Reranker: ``--reranker DIR_OR_NAME``, else a tiny
randomly initialised BERT cross-encoder written by this script (needs ``transformers`` and
``torch``).

Example:
    .venv/bin/python benchmarks/server_vs_trace.py --dataset ../shared/datasets/scifact \\
        --reranker /tmp/reranker-scifact --queries 300 --threads 2
    .venv/bin/python benchmarks/server_vs_trace.py --queries 30     # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

WORDS = (
    "protein gene cell brain neuron memory sleep insulin diabetes obesity diet virus immune "
    "vaccine cancer tumor therapy drug dose trial heart blood pressure muscle bone growth "
    "signal receptor enzyme metabolism liver kidney lung infection bacteria antibiotic"
).split()
HASH_MODEL = "bench-hash-128"


def _limit_threads(n: int) -> None:
    """Cap BLAS / OpenMP pools; must run before numpy is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _synthetic(n_docs: int, n_queries: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    rng = random.Random(seed)
    docs = [
        {"id": f"d{i}", "title": " ".join(rng.sample(WORDS, 3)),
         "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))}
        for i in range(n_docs)
    ]  # fmt: skip
    queries = [" ".join(rng.sample(WORDS, rng.randint(2, 5))) for _ in range(n_queries)]
    return docs, queries


def _tiny_reranker(folder: Path, texts: list[str]) -> Path:
    """A random 2-layer BERT cross-encoder and its WordPiece tokenizer (see tests)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = {t: i for i, t in enumerate(dict.fromkeys(specials + words))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )  # fmt: skip
    tok.decoder = decoders.WordPiece()
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=1,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    ).save_pretrained(folder)  # fmt: skip
    return folder


class _Server:
    """uvicorn serving ``app`` on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def _summary(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def _prepare(args: argparse.Namespace, work: Path) -> tuple[Path, list[str], str, list[str]]:
    """(index dir, queries, reranker source, corpus texts for a tiny reranker)."""
    from embedstack.index import Index

    if args.dataset is not None:
        from embedstack import Encoder
        from embedstack.eval import load_beir
        from embedstack.eval.index_runner import build_or_open_index

        dataset = load_beir(args.dataset, split=args.split)
        encoder = Encoder(args.model, threads=args.threads, show_progress=False)
        index_dir = args.index or Path(tempfile.gettempdir()) / f"idx-{args.dataset.name}"
        build_or_open_index(dataset, index_dir, create_options={"encoder": encoder}).close()
        queries = list(dataset.queries.values())[: args.queries]
        texts = queries
    else:
        from embedstack import HashEncoder, ModelSpec, register_model

        spec = ModelSpec(HASH_MODEL, "embedstack/bench-hash", 128, 512,
                         factory=HashEncoder.from_spec)  # fmt: skip
        register_model(spec, overwrite=True)
        docs, queries = _synthetic(args.docs, args.queries, args.seed)
        index_dir = args.index or work / "index"
        if not (index_dir / "manifest.json").is_file():
            with Index.create(index_dir, encoder=HASH_MODEL) as index:
                index.add(docs)
        texts = [d["title"] + " " + d["text"] for d in docs] + queries
    reranker = args.reranker or str(_tiny_reranker(work / "tiny-reranker", texts))
    return index_dir, queries, reranker, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=None, help="a BEIR dataset folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--index", type=Path, default=None, help="index folder (built once)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--reranker", default=None, help="cross-encoder folder or name")
    parser.add_argument(
        "--backend",
        default=None,
        help="cross-encoder backend on both sides (default: the library's; torch for the "
        "tiny model the script builds)",
    )
    parser.add_argument("--pipeline", default="hybrid-rerank")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--docs", type=int, default=300, help="synthetic corpus size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "server_vs_trace.json",
    )
    args = parser.parse_args()
    _limit_threads(args.threads)

    import httpx

    import embedstack.rerank
    from embedstack.index import Index
    from embedstack.pipeline import Pipeline
    from embedstack.server import ServerSettings, create_app

    loads: list[str] = []
    real_load = embedstack.rerank.load_reranker

    backend = args.backend or (None if args.reranker else "torch")
    extra = {"backend": backend} if backend else {}

    def counted(source: Any, **options: Any) -> Any:
        """The library's loader, counted; ``--backend`` applies to both sides alike."""
        loads.append(str(source))
        return real_load(source, **{**extra, **options})

    embedstack.rerank.load_reranker = counted  # type: ignore[assignment]

    with tempfile.TemporaryDirectory(prefix="server-vs-trace-") as tmp:
        index_dir, queries, reranker, _ = _prepare(args, Path(tmp))
        local = Index.open(index_dir, readonly=True)
        # the library's default options on both sides (the server passes none either)
        pipeline = Pipeline(args.pipeline, index=local, reranker=reranker)
        loads_before = len(loads)
        settings = ServerSettings(
            models=(), rerankers=(reranker,), indexes={"bench": index_dir}, api_keys=(),
            max_k=max(1000, args.k),
        )  # fmt: skip
        app = create_app(settings)
        app.state.embedstack.load_all()  # what `embedstack serve` does before listening
        loads_at_start = len(loads) - loads_before
        url = "/v1/indexes/bench/search"
        trace_s: list[float] = []
        http_s: list[float] = []
        mismatches = 0
        with _Server(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:

            def via_trace(q: str) -> list[str]:
                start = time.perf_counter()
                hits = pipeline.trace(local, q, args.k).hits
                trace_s.append(time.perf_counter() - start)
                return [h.doc_id for h in hits]

            def via_http(q: str) -> list[str]:
                start = time.perf_counter()
                response = client.post(url, json={"query": q, "pipeline": args.pipeline,
                                                  "k": args.k})  # fmt: skip
                http_s.append(time.perf_counter() - start)
                response.raise_for_status()
                return [h["id"] for h in response.json()["data"]]

            for q in queries[: args.warmup]:
                via_trace(q), via_http(q)
            trace_s.clear(), http_s.clear()
            for i, q in enumerate(queries):
                first, second = (via_trace, via_http) if i % 2 == 0 else (via_http, via_trace)
                a, b = first(q), second(q)
                mismatches += a != b
            served = client.get("/v1/models").json()["data"]
        local.close()
    trace, http = _summary(trace_s), _summary(http_s)
    report = {
        "pipeline": pipeline.config.to_string(),
        "dataset": str(args.dataset) if args.dataset else f"synthetic({args.docs} docs)",
        "model": args.model if args.dataset else HASH_MODEL,
        "reranker": args.reranker or "tiny random BERT (2 layers, hidden 32)",
        "queries": len(queries),
        "threads": args.threads,
        "backend": backend or "default",
        "trace": trace,
        "server": http,
        "p50_ratio": http["p50_ms"] / trace["p50_ms"],
        "p99_ratio": http["p99_ms"] / trace["p99_ms"],
        "ranking_mismatches": mismatches,
        "server_reranker_loads": {
            "at_start": loads_at_start,
            "while_serving": len(loads) - loads_before - loads_at_start,
        },
        "served_rerankers": [m["id"] for m in served if m.get("type") == "rerank"],
    }
    print(f"pipeline {report['pipeline']} | {report['queries']} queries, {args.threads} threads")
    print("side     p50 ms   p99 ms   mean ms")
    for side in ("trace", "server"):
        r = report[side]
        print(f"{side:<7}{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['mean_ms']:>9.2f}")
    print(f"server/trace p50 {report['p50_ratio']:.3f}, p99 {report['p99_ratio']:.3f}")
    print(f"ranking mismatches {mismatches}; server loads {report['server_reranker_loads']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    if mismatches or report["server_reranker_loads"] != {"at_start": 1, "while_serving": 0}:
        sys.exit(1)


if __name__ == "__main__":
    main()
