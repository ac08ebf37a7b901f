"""Read-ahead at open: an index asks the kernel for exactly its memory-mapped files (BM25
postings, dense vectors, the HNSW graph), from a background thread, and never for more than
fits in memory; ``EMBEDSTACK_READAHEAD=0`` turns it off. Its effect on latency is measured
by ``benchmarks/readahead_probe.py``, not here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedstack.index import ChunkingParams, Index, readahead

pytest.importorskip("faiss")

from test_index_ann import GaussianEncoder  # noqa: E402

CHUNKS = ChunkingParams(max_tokens=64, overlap=0, allow_any=True)


@pytest.fixture()
def asked(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the background thread asks the kernel for, in order (then asked for)."""
    seen: list[Path] = []
    real = readahead._advise

    def record(path: Path) -> None:
        seen.append(Path(path))
        real(path)

    monkeypatch.setattr(readahead, "_advise", record)
    monkeypatch.delenv("EMBEDSTACK_READAHEAD", raising=False)
    return seen


def _index(path: Path, ann: str | None) -> None:
    with Index.create(path, encoder=GaussianEncoder(), ann=ann, chunking=CHUNKS) as idx:
        idx.add([{"id": f"d{i}", "text": f"document {i:06d} cats"} for i in range(300)])
        idx.add([{"id": f"e{i}", "text": f"other {i:06d} dogs"} for i in range(50)])


def _open_and_wait(path: Path) -> Index:
    idx = Index.open(path, encoder=GaussianEncoder(), readonly=True)
    for mode in ("bm25", "dense"):  # the graph is loaded by the first dense search
        idx.search("cats", mode=mode, k=3)
    readahead.wait()
    return idx


@pytest.mark.parametrize("ann", [None, "hnsw"])
def test_open_asks_for_exactly_the_mapped_files(
    tmp_path: Path, asked: list[Path], ann: str | None
) -> None:
    _index(tmp_path / "ix", ann)
    readahead.wait()
    asked.clear()
    _open_and_wait(tmp_path / "ix").close()
    root = tmp_path / "ix"
    segments = sorted(p.parent.name for p in (root / "lexical").glob("seg-*/docs.npy"))
    expected = {root / "lexical" / s / f for s in segments for f in ("docs.npy", "tfs.npy")}
    expected |= set((root / "dense").glob("seg-*.npy"))
    expected |= set((root / "dense").glob("hnsw-*.faiss"))
    assert len(segments) >= 1 and any(p.suffix == ".faiss" for p in expected) == (ann == "hnsw")
    assert set(asked) == expected and len(asked) == len(expected)


def test_off_switch_and_memory_limit_ask_for_nothing(
    tmp_path: Path, asked: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _index(tmp_path / "ix", "hnsw")
    readahead.wait()
    asked.clear()
    monkeypatch.setenv("EMBEDSTACK_READAHEAD", "0")
    _open_and_wait(tmp_path / "ix").close()
    assert asked == []
    monkeypatch.setenv("EMBEDSTACK_READAHEAD", "1")
    postings = tmp_path / "ix" / "lexical" / "seg-000001" / "docs.npy"
    size = postings.stat().st_size
    monkeypatch.setattr(readahead, "available_bytes", lambda: 2 * size - 1)  # > FRACTION of it
    assert readahead.read_ahead([postings]) is False
    monkeypatch.setattr(readahead, "available_bytes", lambda: None)  # the system does not say
    assert readahead.read_ahead([postings]) is False
    monkeypatch.setattr(readahead, "available_bytes", lambda: 2 * size)
    assert readahead.read_ahead([postings]) is True
    readahead.wait()
    assert asked == [postings]


def test_a_file_gone_before_its_turn_is_skipped(tmp_path: Path, asked: list[Path]) -> None:
    files = [tmp_path / f"f{i}" for i in range(3)]
    for f in files:
        f.write_bytes(os.urandom(1 << 16))
    assert readahead.read_ahead(files)
    readahead.wait()
    files[1].unlink()
    asked.clear()
    assert readahead.read_ahead([tmp_path / "never", *files[:1]])  # missing from the start
    readahead._jobs.put([files[1], files[2]])  # vanished after it was queued
    readahead.wait()
    assert asked == [files[0], files[1], files[2]]
    assert readahead.read_ahead(files[2:])  # the thread is still serving
    readahead.wait()
    assert asked[-1] == files[2]


def test_files_asked_for_while_opening_wait_for_the_open(tmp_path: Path, asked: list[Path]) -> None:
    f, g = tmp_path / "f", tmp_path / "g"
    for path in (f, g):
        path.write_bytes(os.urandom(1 << 12))
    with readahead.deferred():
        assert readahead.read_ahead([f])
        with readahead.deferred():  # nested: the outer block asks
            assert readahead.read_ahead([g])
        readahead.wait()
        assert asked == []
    readahead.wait()
    assert asked == [f, g]


def test_an_open_that_fails_asks_for_nothing(tmp_path: Path, asked: list[Path]) -> None:
    f = tmp_path / "f"
    f.write_bytes(os.urandom(1 << 12))
    with pytest.raises(RuntimeError), readahead.deferred():
        readahead.read_ahead([f])
        raise RuntimeError("open failed")
    readahead.wait()
    assert asked == []
    assert readahead.read_ahead([f])  # and the next call is not held
    readahead.wait()
    assert asked == [f]
