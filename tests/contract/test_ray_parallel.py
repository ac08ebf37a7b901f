"""Ray ingestion into engines: PostgreSQL is written by the actors in parallel (each over its
own connection) and stores the same chunks and vectors as the local path; a re-run stores
nothing twice; a killed worker loses and duplicates nothing. Milvus and local indexes go
through the single writer (the driver).

The Ray runs are ``slow`` (starting workers takes tens of seconds on 2 shared cores)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _backends import Backend

import test_ray_ingest as rt
from embedstack import HashEncoder, Index
from embedstack.integrations.ray_ingest import _parallel_target


def test_only_engines_with_concurrent_writers_are_written_in_parallel(backend: Backend) -> None:
    idx = backend.create()
    assert _parallel_target(idx) == (backend.name == "postgresql")


@pytest.fixture(scope="module")
def ray_pg(pg_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray cluster of 2 CPUs (its files under a temporary folder) and the URI of
    the session's PostgreSQL."""
    ray = pytest.importorskip("ray")
    for module in (rt, sys.modules[__name__]):  # workers lack tests/
        ray.cloudpickle.register_pickle_by_value(module)
    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp))
    yield pg_uri
    ray.shutdown()


def _pg_chunks(uri: str) -> dict[tuple[str, int], tuple[int, int, np.ndarray]]:
    """``{(doc id, chunk no): (start, end, vector)}`` read from the index's tables."""
    import psycopg
    from pgvector.psycopg import register_vector

    from embedstack.index.backends.pg_sql import parse_uri

    target = parse_uri(uri)
    with psycopg.connect(target.conninfo) as conn:
        register_vector(conn)
        rows = conn.execute(
            f"SELECT d.doc_id, c.chunk_no, c.start_char, c.end_char, c.embedding FROM "
            f'"{target.name}".chunks c JOIN "{target.name}".docs d ON d.key = c.doc_key'
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3], np.asarray(r[4], dtype=np.float32)) for r in rows}


def _assert_same(uri: str, local: Path) -> None:
    got, want = _pg_chunks(uri), rt.chunk_vectors(local)
    assert sorted(got) == sorted(want)  # same documents, same chunks: nothing lost or doubled
    for key, (start, end, vec) in want.items():
        g_start, g_end, g_vec = got[key]
        assert (g_start, g_end) == (start, end)
        assert float(vec @ g_vec) / float(np.linalg.norm(vec) * np.linalg.norm(g_vec)) >= 0.9999
    with Index.open(uri, encoder=HashEncoder(rt.DIM), readonly=True) as index:
        index.check()
        assert len(index) == len({k[0] for k in want})


def _target(uri: str, name: str) -> str:
    target = f"{uri}{'&' if '?' in uri else '?'}index={name}"
    Index.create(target, encoder=HashEncoder(rt.DIM), chunking=rt._chunking()).close()
    return target


@pytest.mark.slow
def test_actors_write_postgresql_in_parallel_like_the_local_path(
    ray_pg: str, tmp_path: Path
) -> None:
    from embedstack.integrations.ray_ingest import ingest

    paths = rt._corpus(tmp_path)
    rt._local(tmp_path / "local", paths)
    target = _target(ray_pg, "ray_par")
    seen: list[tuple[int, int]] = []
    done = ingest(target, paths, workers=2, batch_docs=8, max_batch_tokens=64,
                  encoder=lambda: HashEncoder(rt.DIM),
                  on_batch=lambda n, c: seen.append((n, c)))  # fmt: skip
    assert done.parallel_writes
    assert (done.added, done.updated, done.driver_encoded) == (45, 0, 0)
    assert done.chunks > done.added and done.batches == len(seen) >= 6
    assert sum(n for n, _ in seen) == 45
    _assert_same(target, tmp_path / "local")
    again = ingest(target, paths, workers=2, batch_docs=8, encoder=lambda: HashEncoder(rt.DIM))
    assert (again.added, again.unchanged, again.chunks) == (0, 45, 0)
    _assert_same(target, tmp_path / "local")


@pytest.mark.slow
def test_a_killed_writer_actor_loses_and_duplicates_nothing(ray_pg: str, tmp_path: Path) -> None:
    from embedstack.integrations.ray_ingest import ingest

    paths = rt._corpus(tmp_path)
    rt._local(tmp_path / "local", paths)
    target = _target(ray_pg, "ray_kill")
    flag = str(tmp_path / "killed")
    done = ingest(target, paths, workers=2, batch_docs=4,
                  encoder=lambda: rt.KillOnce(flag, "doc 20", "kill"))  # fmt: skip
    assert Path(flag).read_text() == "hit"  # the worker did die
    assert done.parallel_writes and done.added == 45
    _assert_same(target, tmp_path / "local")
