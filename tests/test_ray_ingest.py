"""Ray ingestion (``embedstack.integrations.ray_ingest``): the pieces without Ray (byte
ranges, token batches, the driver's lookup encoder, argument checks), then on a local Ray
cluster of 2 CPUs (``slow``: starting workers takes tens of seconds on 2 shared cores):
the same documents, chunks and vectors as ``index add``'s local path, a killed worker
neither loses nor duplicates anything, and a failed run is completed by running it again.

Ray's session files go under the test's temporary folder (``_temp_dir``), not /tmp/ray.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack import EmbedstackError, HashEncoder, Index, InvalidInput
from embedstack.encoders.base import batched
from embedstack.index.sources import iter_documents
from embedstack.integrations._ray_work import (
    LookupEncoder,
    _actor_threads,
    _jsonl_range,
    shards,
    token_batches,
)

DIM = 64
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi".split()


def _corpus(root: Path, n: int = 40) -> list[Path]:
    """A JSONL corpus (some documents long enough for several chunks, titles, metadata) and a
    folder of Markdown files."""
    rng = np.random.default_rng(7)
    lines = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(3, 90)))
        lines.append(json.dumps({"_id": f"j{i}", "title": f"doc {i}" if i % 3 else "",
                                 "text": " ".join(words), "metadata": {"n": i}}))  # fmt: skip
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    notes = root / "notes"
    notes.mkdir()
    for i in range(5):
        (notes / f"n{i}.md").write_text(f"# Note {i}\n\n" + " ".join(WORDS[i:]) + "\n")
    return [root / "corpus.jsonl", notes]


def _index(path: Path) -> Index:
    return Index.create(path, encoder=HashEncoder(DIM), chunking=_chunking())


def _chunking() -> Any:
    from embedstack.chunking import ChunkingParams

    return ChunkingParams(max_tokens=32, overlap=8, allow_any=True)


def _local(path: Path, paths: list[Path]) -> None:
    """The non-Ray path of ``embedstack index add``."""
    with _index(path) as index:
        for batch in batched(iter_documents(paths), 16):
            index.upsert(batch)


def chunk_vectors(path: Path) -> dict[tuple[str, int], tuple[int, int, np.ndarray]]:
    """``{(doc id, chunk no): (start, end, vector)}`` read from the index's files (SQLite and
    the dense ``.npy`` segments: an index is a directory anyone can inspect)."""
    con = sqlite3.connect(path / "docs.sqlite")
    rows = con.execute("SELECT d.id, c.chunk_no, c.start, c.\"end\", c.segment, c.row FROM "
                       "chunks c JOIN docs d ON d.key = c.doc_key").fetchall()  # fmt: skip
    con.close()
    segs: dict[int, np.ndarray] = {}
    out = {}
    for doc_id, no, start, end, seg, row in rows:
        if seg not in segs:
            segs[seg] = np.load(path / "dense" / f"seg-{seg:06d}.npy", allow_pickle=False)
        out[(doc_id, no)] = (start, end, segs[seg][row])
    return out


def assert_same_index(ray_path: Path, local_path: Path) -> None:
    got, want = chunk_vectors(ray_path), chunk_vectors(local_path)
    assert sorted(got) == sorted(want)  # same documents, same chunks: nothing lost or doubled
    for key, (start, end, vec) in want.items():
        g_start, g_end, g_vec = got[key]
        assert (g_start, g_end) == (start, end)
        cos = float(vec @ g_vec) / float(np.linalg.norm(vec) * np.linalg.norm(g_vec))
        assert cos >= 0.9999, key
    with Index.open(ray_path, encoder=HashEncoder(DIM), readonly=True) as index:
        index.check()
        assert len(index) == len({k[0] for k in want})


# --- without Ray ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text("ab\n", max_size=5).map(lambda t: t.replace("\n", "") + "\n"),
                      max_size=12),
       pieces=st.integers(1, 9))  # fmt: skip
def test_byte_ranges_cover_every_line_once_with_its_number(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], pieces: int
) -> None:
    file = tmp_path_factory.mktemp("ranges") / "f.jsonl"
    file.write_text("".join(lines))
    got = [item for a, b in shards(file, pieces) for item in _jsonl_range(file, a, b)]
    assert got == [(n, line.encode()) for n, line in enumerate(lines, start=1)]


def test_token_batches_bound_the_padded_size_and_keep_every_text() -> None:
    lengths = [5, 40, 3, 3, 17, 8, 100, 2]
    groups = token_batches(lengths, 32)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 32


def test_lookup_encoder_serves_fed_vectors_and_counts_misses() -> None:
    base = HashEncoder(8)
    enc = LookupEncoder(base)
    fed = np.eye(8, dtype=np.float32)[:2]
    enc.feed(["a b", "c d"], fed)
    np.testing.assert_array_equal(enc.encode_documents(["c d", "a b"]), fed[::-1])
    assert enc.misses == 0
    np.testing.assert_allclose(enc.encode_documents(["e f"]), base.encode_documents(["e f"]))
    assert enc.misses == 1
    assert (enc.model_id, enc.dim) == (base.model_id, 8)
    np.testing.assert_array_equal(enc.encode_queries(["x"]), base.encode_queries(["x"]))


def test_bad_arguments_and_invalid_inputs_are_refused_before_anything_runs(tmp_path: Path) -> None:
    from embedstack.integrations.ray_ingest import ingest

    paths = _corpus(tmp_path)
    _index(tmp_path / "idx").close()
    for bad in ({"workers": 0}, {"batch_docs": -1}, {"max_batch_tokens": True}):
        with pytest.raises(InvalidInput):
            ingest(tmp_path / "idx", paths, **bad)
    (tmp_path / "bad.jsonl").write_text('{"_id": "x", "text": "ok"}\nnot json\n')
    with pytest.raises(InvalidInput, match="bad.jsonl:2"):
        ingest(tmp_path / "idx", [tmp_path / "bad.jsonl"])
    with pytest.raises(InvalidInput):
        ingest(tmp_path / "idx", [tmp_path / "missing"])
    with Index.open(tmp_path / "idx", encoder=HashEncoder(DIM)) as index:
        assert len(index) == 0


# --- on a local Ray cluster --------------------------------------------------------------------


class KillOnce(HashEncoder):
    """Kills its worker process the first time it encodes ``marker`` (a file records it)."""

    def __init__(self, flag: str, marker: str, how: str) -> None:
        super().__init__(DIM)
        self.flag, self.marker, self.how = flag, marker, how

    def encode_documents(self, texts: Any) -> Any:
        items = list(texts)
        if any(self.marker in t for t in items) and not os.path.exists(self.flag):
            Path(self.flag).write_text("hit")
            if self.how == "kill":
                os._exit(1)  # the actor dies mid-batch: Ray restarts it and retries the batch
            raise RuntimeError("worker failed")
        return super().encode_documents(items)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp))
    yield ray
    ray.shutdown()


def test_inference_threads_are_left_alone_outside_a_ray_worker() -> None:
    assert _actor_threads({"name": "all-MiniLM-L6-v2"}, {}) == {}


@pytest.mark.slow
def test_actors_run_one_inference_thread_per_cpu_ray_gives_them(ray_cluster: Any) -> None:
    """N actors on a node must not each start a thread per core of the node."""

    @ray_cluster.remote(num_cpus=1)
    def probe() -> tuple[dict[str, int], ...]:
        minilm = {"name": "all-MiniLM-L6-v2"}
        return (_actor_threads(minilm, {}), _actor_threads(minilm, {"threads": 2}),
                _actor_threads({"name": "wordllama-l2-256"}, {}))  # fmt: skip

    assert ray_cluster.get(probe.remote()) == ({"threads": 1}, {}, {})


@pytest.mark.slow
def test_ray_matches_the_local_path_with_2_workers(ray_cluster: Any, tmp_path: Path) -> None:
    from embedstack.integrations.ray_ingest import ingest

    paths = _corpus(tmp_path)
    _local(tmp_path / "local", paths)
    _index(tmp_path / "ray").close()
    done = ingest(tmp_path / "ray", paths, workers=2, batch_docs=8, max_batch_tokens=64,
                  encoder=lambda: HashEncoder(DIM))  # fmt: skip
    assert (done.added, done.updated, done.driver_encoded) == (45, 0, 0)
    assert done.chunks > done.added  # long documents were split
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    again = ingest(tmp_path / "ray", paths, workers=1, batch_docs=8,
                   encoder=lambda: HashEncoder(DIM))  # fmt: skip
    assert (again.added, again.unchanged, again.chunks) == (0, 45, 0)


@pytest.mark.slow
def test_a_killed_worker_loses_and_duplicates_nothing(ray_cluster: Any, tmp_path: Path) -> None:
    from embedstack.integrations.ray_ingest import ingest

    paths = _corpus(tmp_path)
    _local(tmp_path / "local", paths)
    _index(tmp_path / "ray").close()
    flag = str(tmp_path / "killed")
    done = ingest(tmp_path / "ray", paths, workers=2, batch_docs=4,
                  encoder=lambda: KillOnce(flag, "doc 20", "kill"))  # fmt: skip
    assert Path(flag).read_text() == "hit"  # the worker did die
    assert done.added == 45
    assert_same_index(tmp_path / "ray", tmp_path / "local")


@pytest.mark.slow
def test_a_failed_run_completes_when_run_again(ray_cluster: Any, tmp_path: Path) -> None:
    from embedstack.integrations.ray_ingest import ingest

    paths = _corpus(tmp_path)
    _local(tmp_path / "local", paths)
    _index(tmp_path / "ray").close()
    flag = str(tmp_path / "failed")
    with pytest.raises(EmbedstackError, match="Run it again"):
        ingest(tmp_path / "ray", paths, workers=2, batch_docs=4,
               encoder=lambda: KillOnce(flag, "doc 38", "raise"))  # fmt: skip
    with Index.open(tmp_path / "ray", encoder=HashEncoder(DIM), readonly=True) as index:
        committed = len(index)
    assert committed < 45
    done = ingest(tmp_path / "ray", paths, workers=2, batch_docs=4,
                  encoder=lambda: KillOnce(flag, "doc 38", "raise"))  # fmt: skip
    assert (done.added, done.unchanged) == (45 - committed, committed)
    assert_same_index(tmp_path / "ray", tmp_path / "local")


def test_cli_refuses_a_bad_worker_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from embedstack.cli import run

    paths = _corpus(tmp_path)
    _index(tmp_path / "idx").close()
    code = run(["index", "add", str(tmp_path / "idx"), str(paths[0]), "--ray", "--workers", "0"])
    assert code == 2 and "--workers must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_ray_matches_the_local_path_with_the_real_model(
    ray_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``index add --ray`` with all-MiniLM-L6-v2 loaded by name in each actor: batches of
    other compositions than the local path's, the same vectors (cos >= 0.9999)."""
    from embedstack.cli import run

    paths = _corpus(tmp_path, n=24)
    for name in ("local", "ray"):
        assert run(["index", "create", str(tmp_path / name), "--model", "all-MiniLM-L6-v2"]) == 0
    files = [str(p) for p in paths]
    assert run(["index", "add", str(tmp_path / "local"), *files, "--batch-size", "5"]) == 0
    ray_args = ["--ray", "--workers", "2", "--batch-size", "4"]
    assert run(["index", "add", str(tmp_path / "ray"), *files, *ray_args]) == 0
    assert "29 added, 0 updated, 0 unchanged" in capsys.readouterr().out
    got, want = chunk_vectors(tmp_path / "ray"), chunk_vectors(tmp_path / "local")
    assert sorted(got) == sorted(want)
    for key, (start, end, vec) in want.items():
        assert got[key][:2] == (start, end)
        assert float(vec @ got[key][2]) >= 0.9999 * float(np.linalg.norm(vec) ** 2), key


def _parquet(root: Path, jsonl: Path) -> Path:
    """The JSONL corpus's rows as a Parquet file of several row groups (metadata as JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    table = pa.table({"_id": [r["_id"] for r in rows], "title": [r["title"] for r in rows],
                      "text": [r["text"] for r in rows],
                      "metadata": [json.dumps(r["metadata"]) for r in rows]})  # fmt: skip
    pq.write_table(table, root / "corpus.parquet", row_group_size=7)
    return root / "corpus.parquet"


def test_parquet_rows_follow_the_jsonl_rules_with_row_numbers(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedstack.integrations._ray_work import parquet_rows
    from embedstack.integrations.ray_ingest import ingest

    paths = _corpus(tmp_path)
    file = _parquet(tmp_path, paths[0])
    got = [(n, doc) for g in range(pq.ParquetFile(file).num_row_groups)
           for n, doc, _ in parquet_rows(file, g)]  # fmt: skip
    want = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert [n for n, _ in got] == list(range(1, len(want) + 1))
    assert [(d["id"], d["metadata"]) for _, d in got if d] == [
        (w["_id"], w["metadata"]) for w in want
    ]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "a"], "text": ["x y", "  ", "z"]}), bad)
    _index(tmp_path / "idx").close()
    with pytest.raises(InvalidInput, match=r"bad.parquet:2: .*blank.*bad.parquet:3: duplicate"):
        ingest(tmp_path / "idx", [bad])


@pytest.mark.slow
def test_parquet_through_ray_matches_the_same_rows_as_jsonl(
    ray_cluster: Any, tmp_path: Path
) -> None:
    from embedstack.integrations.ray_ingest import ingest

    paths = _corpus(tmp_path)
    _local(tmp_path / "local", [paths[0]])
    _index(tmp_path / "ray").close()
    done = ingest(tmp_path / "ray", [_parquet(tmp_path, paths[0])], workers=2, batch_docs=8,
                  encoder=lambda: HashEncoder(DIM))  # fmt: skip
    assert (done.added, done.driver_encoded) == (40, 0)
    assert_same_index(tmp_path / "ray", tmp_path / "local")
