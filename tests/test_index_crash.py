"""Crash safety: a writer SIGKILLed at chosen moments leaves exactly an acknowledged state.

A child process adds batches in order (skipping those already stored) and prints
``start B`` before each ``add`` and ``ack B`` after it returns. The parent kills it either
inside a write (a random fraction of a typical ``add`` after ``start``) or right after an
acknowledgement, reopens the index as a writer (which recovers), runs ``check()``, and compares
the index with an oracle: it must hold exactly the first ``m`` batches, where ``m`` is one past
the last acknowledged batch, or one past the batch in flight when the kill landed (committed
but not yet acknowledged), with every document's content intact. The test also asserts that
the kills really landed in different places: some rolled a write back, others followed an
acknowledgement, at several batch positions.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import HashEncoder
from embedstack.index import ChunkingParams, Index

TESTS = Path(__file__).resolve().parent
DATASETS = TESTS.parents[0].parent / "shared" / "datasets"
CHUNKS = ChunkingParams(max_tokens=32, overlap=8, allow_any=True)

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from embedstack import HashEncoder
from embedstack.index import Index
path, batches_file = sys.argv[2], sys.argv[3]
batches = json.load(open(batches_file))
idx = Index.open(path, encoder=HashEncoder(64, name="crash-hash"))
print("open", flush=True)
for b, batch in enumerate(batches):
    if idx.get(batch[0]["id"]) is None:
        print("start", b, flush=True)
        idx.add(batch)
    print("ack", b, flush=True)
print("all", flush=True)
"""


@dataclass
class Kill:
    """Where one kill landed and what the reopened index held."""

    aim: str  # "write": during an add; "ack": right after an acknowledgement
    in_flight: int | None  # a batch started and not acknowledged when the child died
    acked: int  # batches acknowledged so far (all of them a prefix: 0 .. acked - 1)
    committed: int  # batches the reopened index holds (a prefix: 0 .. committed - 1)

    @property
    def rolled_back(self) -> bool:
        """The kill interrupted a write and recovery dropped that batch entirely."""
        return self.in_flight is not None and self.committed == self.in_flight


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


def _verify(path: Path, batches: list[list[dict[str, Any]]], allowed: set[int]) -> int:
    """Reopen (recovering), check, and compare with the oracle: the index holds exactly the
    first ``m`` batches for an ``m`` in ``allowed``, contents intact. Returns ``m``."""
    with Index.open(path, encoder=HashEncoder(64, name="crash-hash")) as idx:
        idx.check()
        present = [[idx.get(d["id"]) is not None for d in batch] for batch in batches]
        for b, flags in enumerate(present):
            assert all(flags) or not any(flags), f"batch {b} is partly committed"
        m = sum(all(flags) for flags in present)
        assert all(all(flags) for flags in present[:m]), "the stored batches are not a prefix"
        assert m in allowed, f"index holds batches 0..{m - 1}; acknowledged states: {allowed}"
        assert len(idx) == sum(len(batch) for batch in batches[:m])
        for batch in batches[:m]:
            for doc in batch:
                stored = idx.get(doc["id"])
                assert stored is not None
                assert (stored["text"], stored["title"]) == (doc["text"], doc.get("title", ""))
                assert stored["metadata"] == doc.get("metadata", {})
        for b in range(m):
            doc = batches[b][0]
            hits = idx.search(doc["text"][:200], mode="hybrid", k=5)
            assert doc["id"] in [h.doc_id for h in hits], f"batch {b} not searchable"
    return m


def _fresh(path: Path) -> None:
    if path.exists():
        for f in sorted(path.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        path.rmdir()
    Index.create(path, encoder=HashEncoder(64, name="crash-hash"), chunking=CHUNKS).close()


def _kill_once(
    path: Path, batches_file: Path, aim: str, target: int, rng: np.random.Generator
) -> tuple[list[str], str]:
    """Run the writer until it starts (aim "write") or acknowledges (aim "ack") batch
    ``target``, then SIGKILL it: at once after an ack, or a random fraction of the median
    ``add`` time after a start. Returns every line it printed, and its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(TESTS), str(path), str(batches_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    lines: list[str] = []
    started: dict[int, float] = {}
    durations: list[float] = []
    while line := child.stdout.readline():
        lines.append(line.strip())
        kind, _, number = line.partition(" ")
        if kind == "start":
            started[int(number)] = time.perf_counter()
            if aim == "write" and int(number) >= target:
                typical = statistics.median(durations) if durations else 0.02
                time.sleep(float(rng.uniform(0.0, 0.6)) * typical)
                break
        elif kind == "ack":
            if int(number) in started:
                durations.append(time.perf_counter() - started[int(number)])
            if aim == "ack" and int(number) >= target:
                break
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate()
    assert child.returncode in (-signal.SIGKILL, 0), err
    assert lines and lines[0] == "open", err
    return lines + out.split("\n"), err


def _crash_runs(
    tmp_path: Path, batches: list[list[dict[str, Any]]], runs: int, seed: int
) -> list[Kill]:
    """Kill the writer ``runs`` times, alternating the aim (inside a write, after an ack),
    checking the index against the oracle after each kill."""
    path = tmp_path / "idx"
    _fresh(path)
    batches_file = tmp_path / "batches.json"
    batches_file.write_text(json.dumps(batches))
    rng = np.random.default_rng(seed)
    committed = acked = 0
    kills: list[Kill] = []
    for run in range(runs):
        aim = "write" if run % 3 != 2 else "ack"
        target = committed + int(rng.integers(2, 10))
        lines, _ = _kill_once(path, batches_file, aim, target, rng)
        acks = [int(x.split()[1]) for x in lines if x.startswith("ack ")]
        starts = [int(x.split()[1]) for x in lines if x.startswith("start ")]
        acked = max([acked, *(b + 1 for b in acks)])
        in_flight = starts[-1] if starts and starts[-1] >= acked else None
        allowed = {acked} | ({in_flight + 1} if in_flight is not None else set())
        committed = _verify(path, batches, allowed)
        if "all" in lines:  # everything is in: start over on a fresh index
            assert committed == len(batches)
            _fresh(path)
            committed = acked = 0
            continue
        kills.append(Kill(aim, in_flight, acked, committed))
    return kills


def _assert_varied(kills: list[Kill], rolled_back: int, after_ack: int) -> None:
    """The kills landed in different places, so the oracle checks above cover each."""
    assert sum(k.rolled_back for k in kills) >= rolled_back, kills
    assert sum(k.aim == "ack" for k in kills) >= after_ack, kills
    assert len({k.in_flight for k in kills if k.in_flight is not None}) >= 2, kills


def test_sigkill_during_adds(tmp_path: Path) -> None:
    batches = _synthetic_batches(n_batches=300, size=8)
    kills = _crash_runs(tmp_path, batches, runs=6, seed=0)
    assert len(kills) == 6
    _assert_varied(kills, rolled_back=2, after_ack=2)


@pytest.mark.slow
def test_sigkill_during_scifact_ingest(tmp_path: Path) -> None:
    batches = _scifact_batches(size=64)
    kills = _crash_runs(tmp_path, batches, runs=20, seed=1)
    assert len(kills) >= 10
    _assert_varied(kills, rolled_back=5, after_ack=5)
