"""Server load: single-text embedding requests from concurrent clients, with and without
micro-batching, against a real ``embedstack serve`` (uvicorn) subprocess.

For each mode (``batched``: the default, concurrent requests merged into one model call;
``unbatched``: ``--no-batching``, one model call per request) the script

1. starts ``embedstack serve --model MODEL`` on a free 127.0.0.1 port (the
   model is loaded before the server listens; the ONNX export is cached after the first
   start) and waits for ``/healthz``;
2. warms up with ``--warmup`` requests;
3. sends ``--requests`` POST /v1/embeddings requests, each ONE text, from ``--concurrency``
   clients sharing one ``httpx.AsyncClient`` (one connection each), the texts taken in
   order from the SciFact queries (``../shared/datasets/scifact/queries.jsonl``; synthetic
   sentences when absent);
4. reads ``/metrics`` (requests merged per model call) and stops the server.

Both modes run in the same invocation, on the same texts, one after the other. Reported
per mode: errors (non-200 or transport failures; must be 0), requests/s over the timed
phase, p50/p99 latency (client-side, request sent to response read) and the mean number of
requests per model call; and the ratio of requests/s, batched / unbatched. Finally the
encoder alone (no HTTP) encodes the same texts one per call and ``--concurrency`` per call:
that ratio bounds what any micro-batching can gain on this machine.

``--mixed`` runs the soak instead (:mod:`server_mixed`): for each of ``--backends``
(``local``: an index folder; ``pg``: a PostgreSQL-backed index, on a PostgreSQL started with
``pgserver`` in a temporary folder unless ``--pg-uri`` names one) it creates the index with
``--model`` (default ``hash-256``, the hashing encoder, so the storage paths are what is
measured; any model name works), adds ``--seed-docs`` documents, serves it with
``embedstack serve --model MODEL --index soak=TARGET``, sends ``--requests`` mixed
requests (embeddings, searches, upserts, deletes) from ``--concurrency`` clients, stops the
server and reads the index back: every acknowledged upsert must be there with its content,
every acknowledged delete gone. Reported per backend: errors, requests/s, p50/p99 per
request kind and the verification counts; the exit status is 0 only with no error and a
clean verification.

Prints one JSON object and writes it to ``--out``.

Example:
    .venv/bin/python benchmarks/server_load.py --out /tmp/server_load.json
    .venv/bin/python benchmarks/server_load.py --requests 500 --concurrency 16
    nice -n 19 .venv/bin/python benchmarks/server_load.py --mixed --requests 10000 \\
        --concurrency 32 --out benchmarks/results/issue18/server_soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(1, str(ROOT / "benchmarks"))

MODES = ("batched", "unbatched")


def _texts(datasets: Path, n: int) -> tuple[list[str], str]:
    """``n`` texts (cycled): SciFact queries when available, else synthetic sentences."""
    queries = datasets / "scifact" / "queries.jsonl"
    if queries.is_file():
        with queries.open(encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle if line.strip()]
        source = f"SciFact queries ({len(texts)})"
    else:
        topics = ("protein folding", "vitamin D", "gene expression", "immune response")
        texts = [f"What is known about {topics[i % 4]} in study {i}?" for i in range(1000)]
        source = "synthetic sentences (SciFact not found)"
    return [texts[i % len(texts)] for i in range(n)], source


def hash_prelude(model: str) -> str:
    """Python that registers ``hash-DIM`` (the hashing encoder) in a child ``embedstack
    serve`` (:func:`server_mixed.register_hash`; the registry holds no hashing model)."""
    bench = str(ROOT / "benchmarks")
    return (
        f"import sys; sys.path.insert(0, {bench!r}); from server_mixed import register_hash; "
        f"register_hash({model!r}); "
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``embedstack serve`` in a subprocess, logs in a temporary file."""

    def __init__(self, model: str, batching: bool, max_wait_ms: float,
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
        command = [
            sys.executable, "-c", f"{hash_prelude(model)}from embedstack.cli import main; main()",
            "serve", "--model", model,
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
            "--max-wait-ms", str(max_wait_ms), "--batching" if batching else "--no-batching",
            *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "EMBEDSTACK_NO_PROGRESS": "1"}
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


async def _load(url: str, model: str, texts: list[str], concurrency: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    position = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal position
            while position < len(texts):
                text = texts[position]
                position += 1
                start = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/embeddings", json={"model": model, "input": text}
                    )
                    ok = response.status_code == 200 and len(response.json()["data"]) == 1
                    if not ok:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def _batch_stats(url: str, model: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    label = re.escape(f'{{model="{model}"}}')

    def value(name: str) -> float:
        found = re.search(rf"^{name}{label} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else float("nan")

    calls = value("embedstack_batch_requests_count")
    merged = value("embedstack_batch_requests_sum")
    return {"model_calls": calls, "mean_requests_per_call": round(merged / calls, 2)}


def model_bound(model: str, texts: list[str], batch: int) -> dict[str, Any]:
    """The most micro-batching can gain: the same texts through the server's model call
    (length-grouped, :func:`embedstack.server.models._embed`) in this process, no HTTP, one
    text per call vs ``batch`` per call, spinning off as in the server. The two alternate
    per chunk of ``batch`` texts, so machine noise hits both."""
    os.environ.setdefault("EMBEDSTACK_ORT_SPINNING", "0")
    from embedstack import Encoder
    from embedstack.server.models import _embed

    encoder = Encoder(model, show_progress=False)
    _embed(encoder, "document", texts[:batch])  # warm-up
    single = merged = 0.0
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        t0 = time.perf_counter()
        for text in chunk:
            _embed(encoder, "document", [text])
        t1 = time.perf_counter()
        _embed(encoder, "document", chunk)
        t2 = time.perf_counter()
        single, merged = single + (t1 - t0), merged + (t2 - t1)
    return {
        "texts": len(texts),
        "batch": batch,
        "texts_per_s_one_per_call": round(len(texts) / single, 1),
        "texts_per_s_batched": round(len(texts) / merged, 1),
        "ratio": round(single / merged, 2),
    }


def run_mode(mode: str, args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    server = Server(args.model, mode == "batched", args.max_wait_ms)
    try:
        server.wait_ready(args.start_timeout)
        asyncio.run(_load(server.url, args.model, texts[: args.warmup], args.concurrency))
        result = asyncio.run(_load(server.url, args.model, texts, args.concurrency))
        result.update(_batch_stats(server.url, args.model))  # warm-up calls included
        return result
    finally:
        server.stop()


@contextmanager
def _target(backend: str, args: argparse.Namespace, work: Path) -> Iterator[str]:
    """A fresh index target: a folder under ``work``, or a PostgreSQL URI (``--pg-uri``,
    else a pgserver started under ``work`` and stopped on exit)."""
    if backend == "local":
        yield str(work / "soak-index")
        return
    from backends_quality import postgres

    with postgres(args.pg_uri, work) as uri:
        sep = "&" if "?" in uri else "?"
        yield f"{uri}{sep}index=soak_{os.getpid()}_{int(time.time())}"


def run_mixed(backend: str, args: argparse.Namespace, texts: list[str],
              group_commit: bool = True) -> dict[str, Any]:  # fmt: skip
    """Create, seed, serve, load and verify one backend's index (see the module doc)."""
    import httpx

    from embedstack.index import Index
    from server_mixed import Acked, mixed_load, register_hash, verify

    register_hash(args.model)  # the same hashing model as the server's
    with tempfile.TemporaryDirectory(prefix="embedstack-soak-") as tmp, _target(
        backend, args, Path(tmp)
    ) as target:  # fmt: skip
        os.chmod(tmp, 0o755)  # pgserver's PostgreSQL user traverses it when run as root
        acked = Acked()
        seed = acked.seed(args.seed_docs, texts)
        with Index.create(target, encoder=args.model) as index:
            for i in range(0, len(seed), 500):
                index.add(seed[i : i + 500])
        switch = "--group-commit" if group_commit else "--no-group-commit"
        server = Server(args.model, True, args.max_wait_ms, ("--index", f"soak={target}", switch))
        try:
            server.wait_ready(args.start_timeout)
            limits = httpx.Limits(max_connections=args.concurrency)

            async def load() -> dict[str, Any]:
                async with httpx.AsyncClient(base_url=server.url, timeout=args.request_timeout,
                                             limits=limits) as client:  # fmt: skip
                    return await mixed_load(
                        client, model=args.model, index="soak", acked=acked, texts=texts,
                        requests=args.requests, concurrency=args.concurrency, seed=args.seed,
                    )  # fmt: skip

            result = asyncio.run(load())
            if result["errors"]:  # the server's side of each error (a 500's traceback)
                result["server_log_tail"] = server.tail(20000)
        finally:
            server.stop()
        start = time.perf_counter()
        with Index.open(target, readonly=True) as index:
            result["verify"] = verify(index, acked)
        result["verify"]["seconds"] = round(time.perf_counter() - start, 1)
        result["seed_docs"] = args.seed_docs
        return result


def _report(name: str, args: argparse.Namespace, settings: dict[str, Any], source: str,
            results: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The JSON report: the run's settings, the machine, ``results`` by mode or backend and
    their total errors, then ``extra``."""
    return {
        "benchmark": name,
        "model": args.model,
        "requests": args.requests,
        "concurrency": args.concurrency,
        **settings,
        "texts": source,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
        "errors": sum(r["errors"] for r in results.values()),
        **extra,
    }


def main_mixed(args: argparse.Namespace) -> dict[str, Any]:
    texts, source = _texts(args.datasets, 2000)
    arms = {"on": [True], "off": [False], "both": [False, True]}[args.group_commit]
    results = {
        backend + ("" if on else "/no-group-commit"): run_mixed(backend, args, texts, on)
        for backend in args.backends
        for on in arms
    }
    from server_mixed import KINDS, WEIGHTS

    weights = dict(zip(KINDS, WEIGHTS, strict=True))
    verified = all(r["verify"]["ok"] for r in results.values())
    return _report("server_load_mixed", args, {"weights": weights,
                   "group_commit": args.group_commit}, source, results,
                   verified=verified)  # fmt: skip


def main_load(args: argparse.Namespace) -> dict[str, Any]:
    texts, source = _texts(args.datasets, args.requests)
    results = {mode: run_mode(mode, args, texts) for mode in MODES}
    bound = model_bound(args.model, texts[: min(len(texts), 1000)], args.concurrency)
    ratio = results["batched"]["requests_per_s"] / results["unbatched"]["requests_per_s"]
    return _report("server_load", args, {"max_wait_ms": args.max_wait_ms}, source, results,
                   model_only_bound=bound,
                   ratio_batched_over_unbatched=round(ratio, 2))  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None,
        help="served model (default all-MiniLM-L6-v2; with --mixed hash-256, the hashing "
        "encoder: hash-DIM names it at any dimension)",
    )  # fmt: skip
    parser.add_argument("--mixed", action="store_true", help="the mixed soak (see above)")
    parser.add_argument("--backends", type=lambda v: v.split(","), default=["local", "pg"],
                        help="--mixed: comma-separated, of local and pg")  # fmt: skip
    parser.add_argument("--pg-uri", default=None, help="--mixed: a PostgreSQL to use")
    parser.add_argument("--seed-docs", type=int, default=1000, help="--mixed: first docs")
    parser.add_argument("--seed", type=int, default=0, help="--mixed: random seed")
    parser.add_argument("--group-commit", choices=("on", "off", "both"), default="on",
                        help="--mixed: the server's group commit of index writes; both: one "
                        "run without it, then one with it")  # fmt: skip
    parser.add_argument("--request-timeout", type=float, default=600.0,
                        help="--mixed: seconds before a request counts as an error")  # fmt: skip
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 1:
        parser.error("--requests, --concurrency and --warmup must be >= 1")
    if args.mixed:
        args.model = args.model or "hash-256"
        if not set(args.backends) <= {"local", "pg"} or args.seed_docs < 1:
            parser.error("--backends takes local and pg; --seed-docs must be >= 1")
        report = main_mixed(args)
    else:
        args.model = args.model or "all-MiniLM-L6-v2"
        report = main_load(args)
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    final = main()
    sys.exit(0 if final["errors"] == 0 and final.get("verified", True) else 1)
