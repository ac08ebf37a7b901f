"""Crash safety: a writer SIGKILLed at random moments leaves a consistent, recoverable index.

A child process adds batches and prints a line after each ``add`` returns; the parent kills
it at a random time, reopens the index as a writer (which recovers), runs ``check()`` and
verifies that every acknowledged batch is fully searchable and that every batch is either
entirely present or entirely absent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedstack import HashEncoder
from embedstack.index import ChunkingParams, Index
from test_index_helpers import WRITER_LOOP

TESTS = Path(__file__).resolve().parent
DATASETS = TESTS.parents[0].parent / "shared" / "datasets"
CHUNKS = ChunkingParams(max_tokens=32, overlap=8, allow_any=True)

CHILD = (
    r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from embedstack import HashEncoder
from embedstack.index import Index
path, batches_file = sys.argv[2], sys.argv[3]
batches = json.load(open(batches_file))
idx = Index.open(path, encoder=HashEncoder(64, name="crash-hash"))
"""
    + WRITER_LOOP
)


def _synthetic_batches(n_batches: int, size: int) -> list[list[dict]]:
    from test_index_helpers import corpus

    docs = corpus(n_batches * size, seed=11)
    return [docs[i * size : (i + 1) * size] for i in range(n_batches)]


def _scifact_batches(size: int) -> list[list[dict]]:
    from embedstack.eval import iter_corpus

    path = DATASETS / "scifact"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    docs = [
        {"id": d.id, "title": d.title, "text": d.text} for d in iter_corpus(path) if d.text.strip()
    ]
    return [docs[i : i + size] for i in range(0, len(docs), size)]


def _verify(path: Path, batches: list[list[dict]], acked: set[int]) -> None:
    with Index.open(path, encoder=HashEncoder(64, name="crash-hash")) as idx:
        idx.check()
        n = 0
        for b, batch in enumerate(batches):
            present = [idx.get(d["id"]) is not None for d in batch]
            assert all(present) or not any(present), f"batch {b} is partly committed"
            if b in acked:
                assert all(present), f"acknowledged batch {b} is missing"
            n += len(batch) * all(present)
        assert len(idx) == n
        for b in acked:
            doc = batches[b][0]
            assert idx.get(doc["id"])["text"] == doc["text"]
            hits = idx.search(doc["text"][:200], mode="hybrid", k=5)
            assert doc["id"] in [h.doc_id for h in hits], f"batch {b} not searchable"


def _crash_runs(
    tmp_path: Path, batches: list[list[dict]], runs: int, window: tuple[float, float], seed: int
) -> int:
    path = tmp_path / "idx"
    Index.create(path, encoder=HashEncoder(64, name="crash-hash"), chunking=CHUNKS).close()
    batches_file = tmp_path / "batches.json"
    batches_file.write_text(json.dumps(batches))
    rng = np.random.default_rng(seed)
    acked: set[int] = set()
    kills = 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(runs):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(TESTS), str(path), str(batches_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # wait until the index is open: kill during writes
        assert first.strip() == "open", child.stderr.read() if child.stderr else first
        time.sleep(float(rng.uniform(*window)))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        lines = out.split()
        finished = "all" in lines
        kills += not finished
        acked |= {int(x) for x in lines if x.isdigit()}
        assert child.returncode in (-signal.SIGKILL, 0), err
        _verify(path, batches, acked)
        if finished:  # everything is in: start over on a fresh index
            Index.open(path, encoder=HashEncoder(64, name="crash-hash")).close()
            for f in sorted(path.rglob("*"), reverse=True):
                f.rmdir() if f.is_dir() else f.unlink()
            path.rmdir()
            Index.create(path, encoder=HashEncoder(64, name="crash-hash"), chunking=CHUNKS).close()
            acked = set()
    return kills


def test_sigkill_during_adds(tmp_path: Path) -> None:
    batches = _synthetic_batches(n_batches=300, size=8)
    kills = _crash_runs(tmp_path, batches, runs=3, window=(0.05, 0.6), seed=0)
    assert kills >= 1


@pytest.mark.slow
def test_sigkill_during_scifact_ingest(tmp_path: Path) -> None:
    batches = _scifact_batches(size=64)
    kills = _crash_runs(tmp_path, batches, runs=20, window=(0.05, 3.0), seed=1)
    assert kills >= 10
