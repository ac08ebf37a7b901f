"""Shared helpers of the index tests (no tests here): small corpora, a counting encoder."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedstack import HashEncoder
from embedstack.index import ChunkingParams, Index

SMALL_CHUNKS = ChunkingParams(max_tokens=16, overlap=4, allow_any=True)

WORDS = (
    "protein cell gene cancer tumour therapy patient study mouse rna dna virus vaccine "
    "immune response brain neuron heart blood insulin diabetes obesity diet exercise sleep "
    "stress memory learning signal pathway receptor enzyme kinase mutation genome trial"
).split()


WRITER_LOOP = r"""
print("open", flush=True)
for b, batch in enumerate(batches):
    if idx.get(batch[0]["id"]) is None:
        idx.add(batch)
    print(b, flush=True)
print("all", flush=True)
"""
"""Tail of a SIGKILL-test writer script: given ``idx`` and ``batches``, add each batch not yet
stored and acknowledge it ("open", then the batch number, then "all") on stdout."""


def corpus(n: int, seed: int = 0, prefix: str = "d") -> list[dict[str, Any]]:
    """Synthetic documents with titles, multi-sentence texts and metadata."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        sentences = []
        for _ in range(int(rng.integers(1, 6))):
            words = rng.choice(WORDS, size=int(rng.integers(3, 12)))
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(
            {
                "id": f"{prefix}{i}",
                "title": " ".join(rng.choice(WORDS, size=2)) if i % 3 else "",
                "text": " ".join(sentences) + f" uniq{prefix}{i}",
                "metadata": {
                    "year": 2000 + i % 25,
                    "lang": ["en", "de", "fr"][i % 3],
                    "tags": [f"t{i % 4}", f"t{i % 5}"],
                },
            }
        )
    return docs


class CountingEncoder:
    """A HashEncoder that counts the documents it embeds."""

    def __init__(self, dim: int = 64, name: str = "counting") -> None:
        self.inner = HashEncoder(dim, name=name)
        self.embedded: list[str] = []

    name = property(lambda self: self.inner.name)
    model_id = property(lambda self: self.inner.model_id)
    dim = property(lambda self: self.inner.dim)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        return self.inner.encode(texts)

    def encode_queries(self, texts: Iterable[str]) -> np.ndarray:
        return self.inner.encode_queries(texts)

    def encode_documents(self, texts: Iterable[str]) -> np.ndarray:
        items = list(texts)
        self.embedded += items
        return self.inner.encode_documents(items)


def snapshot(path: Path) -> dict[str, str]:
    """Hashes of every file, SQLite by its logical content (checkpoints move its bytes)."""
    out = {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file() and not f.name.startswith("docs.sqlite")
    }
    conn = sqlite3.connect(path / "docs.sqlite")
    try:
        dump = "\n".join(line for line in conn.iterdump() if "schema_migrations" not in line)
    finally:
        conn.close()
    out["docs.sqlite"] = hashlib.sha256(dump.encode()).hexdigest()
    return out


def results(
    idx: Index, queries: list[str], mode: str, k: int = 10
) -> list[list[tuple[str, float]]]:
    return [
        [(h.doc_id, h.score) for h in hits] for hits in idx.search_many(queries, mode=mode, k=k)
    ]


@dataclass
class KillLog:
    """What :func:`sigkill_rounds` saw so far: acknowledged batch numbers and how many runs
    were killed before they finished."""

    acked: set[int] = field(default_factory=set)
    kills: int = 0


def sigkill_rounds(
    script: str, args: list[str], rounds: int = 4, seed: int = 0
) -> Iterator[KillLog]:
    """Run ``python -c script *args`` (a writer that prints ``open``, then each batch
    number it committed, then ``all``) ``rounds`` times, SIGKILLing it at a random moment
    after ``open``. After each kill yields the (updated) :class:`KillLog`, for the caller to
    check the index."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(seed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = KillLog()
    for _ in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "open"
        time.sleep(float(rng.uniform(0.05, 1.0)))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        log.acked |= {int(x) for x in out.split() if x.isdigit()}
        log.kills += "all" not in out.split()
        yield log


def committed_batches(
    idx: Index, batches: list[list[dict[str, Any]]], acked: set[int]
) -> dict[str, dict[str, Any]]:
    """Assert no batch is partly committed and every acknowledged one is; return the
    documents of the committed batches by id."""
    present = [[idx.get(d["id"]) is not None for d in b] for b in batches]
    assert all(all(p) or not any(p) for p in present)
    assert all(all(present[b]) for b in acked)
    return {d["id"]: d for b, batch in enumerate(batches) if all(present[b]) for d in batch}
