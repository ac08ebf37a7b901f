"""What only the PostgreSQL store has to show: URIs and namespaces, transactions (a batch
is all or nothing), several processes writing at once, HNSW with filters, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _backends import encoder

from embedstack import HashEncoder
from embedstack.cli import run
from embedstack.errors import IndexNotFound, InvalidInput
from embedstack.index import Index
from embedstack.index.backends.pg_sql import parse_uri

pytest.importorskip("psycopg", reason="psycopg not installed: pip install embedstack[postgres]")


def docs(n: int, prefix: str = "d", start: int = 0) -> list[dict[str, Any]]:
    words = ["cat", "dog", "purr", "bark", "protein", "alpha", "beta", "gamma"]
    return [
        {"id": f"{prefix}{i}", "text": " ".join(words[(i * j) % 8] for j in range(1, 6)),
         "metadata": {"i": i, "even": i % 2 == 0}}
        for i in range(start, start + n)
    ]  # fmt: skip


class Poisoned(HashEncoder):
    """Returns NaN vectors for texts containing "poison": pgvector refuses them inside the
    batch's transaction, after the documents were copied in."""

    def encode_documents(self, texts: Any, **kwargs: Any) -> Any:
        out = np.array(super().encode_documents(texts, **kwargs), dtype=np.float32)
        out[["poison" in t for t in texts]] = np.nan
        return out


def test_uri_parsing() -> None:
    t = parse_uri("postgresql://ann:secret@db.example:5433/prod?index=papers&sslmode=require")
    assert t.name == "papers" and t.metric is None
    assert t.conninfo == "postgresql://ann:secret@db.example:5433/prod?sslmode=require"
    assert "secret" not in t.location and "papers" in t.location
    assert parse_uri("postgresql:///db").name == "embedstack"
    assert parse_uri("postgres:///db?metric=cosine").metric == "cosine"
    for bad in ("postgresql:///db?index=Bad-Name", "postgresql:///db?index=public",
                "postgresql:///db?index=pg_x", "postgresql:///db?metric=l2",
                "postgresql:///db?index=a&index=b"):  # fmt: skip
        with pytest.raises(InvalidInput):
            parse_uri(bad)


def test_unreachable_server_is_a_typed_error(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    uri = "postgresql://nobody@127.0.0.1:1/db?index=x&connect_timeout=2"
    with pytest.raises(IndexNotFound, match="cannot connect"):
        Index.create(uri, encoder=HashEncoder(16))
    with pytest.raises(IndexNotFound, match="cannot connect"):
        Index.open(uri)
    assert list(tmp_path.iterdir()) == []  # issue 18: no folder named "postgresql:"


def test_indexes_share_a_database(pg_target: Any) -> None:
    a, b = pg_target(), pg_target()
    with Index.create(a, encoder=encoder()) as ia, Index.create(b, encoder=encoder(),
                                                                dim=16) as ib:  # fmt: skip
        ia.add(docs(5))
        ib.add(docs(3, "other"))
        assert (len(ia), len(ib)) == (5, 3)
        assert ia.get("other0") is None and ib.get("d0") is None
        assert ib.stats().dim == 16


def test_a_failing_batch_writes_nothing(pg_target: Any) -> None:
    target = pg_target()
    with Index.create(target, encoder=Poisoned(64)) as idx:
        idx.add(docs(4))
        before = {h.doc_id: h.score for h in idx.search("cat purr", mode="bm25", k=10)}
        replaced = {**docs(1)[0], "text": "new text poison"}
        batch = [*docs(3, start=10), replaced, {"id": "z", "text": "poison pill"}]
        with pytest.raises(InvalidInput, match="nothing was written"):
            idx.upsert(batch)
        assert len(idx) == 4 and idx.get("d10") is None and idx.get("z") is None
        assert idx.get("d0") == {"id": "d0", "text": docs(1)[0]["text"], "title": "",
                                 "metadata": {"i": 0, "even": True}}  # fmt: skip
        assert {h.doc_id: h.score for h in idx.search("cat purr", mode="bm25", k=10)} == before
        idx.check()
        with pytest.raises(InvalidInput, match="NUL"):
            idx.add([{"id": "n1", "text": "fine"}, {"id": "n2", "text": "bad\x00text"}])
        assert idx.get("n1") is None


WORKER = textwrap.dedent(
    """
    import json, sys
    from embedstack import HashEncoder
    from embedstack.index import Index
    uri, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    words = ["cat", "dog", "purr", "bark", "protein", "alpha"]
    seen = []
    with Index.open(uri, encoder=HashEncoder(64)) as idx:
        for i in range(n):
            idx.upsert([{"id": f"{prefix}{i}-{j}", "text": f"{words[(i + j) % 6]} {prefix} {j}"}
                        for j in range(5)] + [{"id": "shared", "text": f"{prefix} wrote {i}"}])
            if i % 3 == 2:
                idx.delete([f"{prefix}{i}-0"])
            seen.append(len(idx.search("cat purr", mode="hybrid", k=5)))
    print(json.dumps(seen))
    """
)


def test_two_processes_write_and_read_at_once(pg_target: Any, tmp_path: Path) -> None:
    target = pg_target()
    Index.create(target, encoder=encoder()).close()
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    n = 12
    procs = [subprocess.Popen([sys.executable, str(script), target, p, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in ("a", "b")]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert all(c == 5 for c in json.loads(out))
    with Index.open(target, encoder=encoder(), readonly=True) as idx:
        expected = {f"{p}{i}-{j}" for p in "ab" for i in range(n) for j in range(5)
                    if not (j == 0 and i % 3 == 2)} | {"shared"}  # fmt: skip
        assert len(idx) == len(expected)
        assert {h.doc_id for h in idx.search("cat dog purr bark protein alpha", mode="dense",
                                             k=1000)} == expected  # fmt: skip
        assert idx.get("shared")["text"] in {"a wrote 11", "b wrote 11"}  # type: ignore[index]
        idx.check()


def test_hnsw_cosine_returns_k_whenever_k_match(pg_uri: str) -> None:
    sep = "&" if "?" in pg_uri else "?"
    exact_t, hnsw_t = f"{pg_uri}{sep}index=hnsw_exact", f"{pg_uri}{sep}index=hnsw_cos&metric=cosine"
    corpus = docs(300)
    corpus[7]["metadata"]["rare"] = True
    corpus[250]["metadata"]["rare"] = True
    with Index.create(exact_t, encoder=encoder()) as exact, \
            Index.create(hnsw_t, encoder=encoder(), ann="hnsw") as hnsw:  # fmt: skip
        exact.add(corpus)
        hnsw.add(corpus)
        assert hnsw.manifest["backend_options"]["metric"] == "cosine"
        for q in ("cat purr", "protein gamma", "bark"):
            want = exact.search(q, mode="dense", k=10)
            got = hnsw.search(q, mode="dense", k=10)
            assert len(got) == 10
            assert len({h.doc_id for h in got} & {h.doc_id for h in want}) >= 8
            flt = {"rare": True}
            assert [h.doc_id for h in hnsw.search(q, mode="dense", k=5, filter=flt)] == [
                h.doc_id for h in exact.search(q, mode="dense", k=5, filter=flt)
            ]
            assert len(hnsw.search(q, mode="dense", k=150, filter={"even": True})) == 150


def test_cli_on_a_postgresql_uri(
    pg_target: Any, hash_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = pg_target()
    assert run(["index", "create", target, "--model", hash_model]) == 0
    assert not any(tmp_path.iterdir())
    lines = [json.dumps(d) for d in docs(6)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(["index", "add", target, str(tmp_path / "d.jsonl")]) == 0
    assert "6 added" in capsys.readouterr().out
    assert run(["index", "delete", target, "d1"]) == 0
    assert run(["index", "stats", target, "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["n_docs"] == 5
    assert run(["index", "check", target]) == 0
    capsys.readouterr()
    assert run(["search", target, "purr cat", "--mode", "bm25", "-k", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2]
    assert run(["index", "create", target, "--model", hash_model]) != 0  # exists
    assert run(["index", "create", "nosuch://x", "--model", hash_model]) != 0
    assert "unknown index URI scheme" in capsys.readouterr().err


def test_check_names_what_is_wrong(pg_target: Any) -> None:
    import psycopg

    from embedstack.errors import IndexCorrupt
    from embedstack.index.backends.pg_sql import parse_uri

    target = pg_target()
    with Index.create(target, encoder=encoder()) as idx:
        idx.add(docs(5))
        idx.check()
    t = parse_uri(target)
    with psycopg.connect(t.conninfo, autocommit=True) as conn:
        conn.execute(f'UPDATE "{t.name}".totals SET total_length = total_length + 1')
        conn.execute(f"DELETE FROM \"{t.name}\".chunks WHERE doc_key = (SELECT key FROM "
                     f"\"{t.name}\".docs WHERE doc_id = 'd2')")  # fmt: skip
    with Index.open(target, encoder=encoder()) as idx:
        with pytest.raises(IndexCorrupt, match="BM25 totals") as info:
            idx.check()
        assert "1 documents have no chunk vectors" in str(info.value)


def test_bm25_ties_at_the_kth_place_break_by_id_like_the_local_index(
    pg_target: Any, tmp_path: Path
) -> None:
    # 12 documents with one text score alike: the best k are the k smallest ids in code-point
    # order, with and without a filter (two statements: by key, and joined for the filter)
    same = [{"id": f"x{i}", "text": "alpha beta gamma zeta", "metadata": {"i": i}}
            for i in (7, 10, 2, 11, 0, 5, 1, 9, 3, 6, 4, 8)]  # fmt: skip
    rest = docs(20)
    target = pg_target()
    with (
        Index.create(target, encoder=encoder()) as pg,
        Index.create(tmp_path / "local", encoder=encoder()) as local,
    ):
        for idx in (pg, local):
            idx.add(same + rest)
        for k in (1, 3, 5, 12, 40):
            for flt in (None, {"i": {"$gte": 0}}):
                got = [(h.doc_id, h.score) for h in pg.search("alpha beta gamma", mode="bm25",
                                                               k=k, filter=flt)]  # fmt: skip
                want = [(h.doc_id, h.score) for h in local.search("alpha beta gamma",
                                                                   mode="bm25", k=k,
                                                                   filter=flt)]  # fmt: skip
                assert [i for i, _ in got] == [i for i, _ in want], (k, flt)
                np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6)
        assert [h.doc_id for h in pg.search("zeta", mode="bm25", k=3)] == ["x0", "x1", "x10"]


def test_an_index_with_the_earlier_postings_is_upgraded_by_a_writer(pg_target: Any) -> None:
    import psycopg

    from embedstack.errors import IndexCorrupt
    from embedstack.index.backends.pg_sql import POSTINGS_LAYOUT

    target = pg_target()
    with Index.create(target, encoder=encoder()) as idx:
        idx.add(docs(30))
        before = [[(h.doc_id, h.score) for h in idx.search(q, mode="bm25", k=10)]
                  for q in ("cat purr", "protein alpha beta", "dog")]  # fmt: skip
    t = parse_uri(target)
    s = f'"{t.name}"'
    with psycopg.connect(t.conninfo, autocommit=True) as conn:  # back to layout 1
        conn.execute(f"ALTER TABLE {s}.postings DROP CONSTRAINT postings_pkey")
        conn.execute(f"ALTER TABLE {s}.postings DROP COLUMN dl")
        conn.execute(f"ALTER TABLE {s}.postings ADD PRIMARY KEY (term, doc_key)")
        conn.execute(f"UPDATE {s}.manifest SET body = body #- '{{backend_options,postings}}'")
    with pytest.raises(IndexCorrupt, match="open it once as a writer"):
        Index.open(target, encoder=encoder(), readonly=True)
    with Index.open(target, encoder=encoder()) as idx:  # the writer upgrades in place
        idx.check()
        after = [[(h.doc_id, h.score) for h in idx.search(q, mode="bm25", k=10)]
                 for q in ("cat purr", "protein alpha beta", "dog")]  # fmt: skip
        assert after == before
        idx.add(docs(3, "new"))
    with psycopg.connect(t.conninfo, autocommit=True) as conn:
        body = conn.execute(f"SELECT body FROM {s}.manifest").fetchone()[0]
        assert body["backend_options"]["postings"] == POSTINGS_LAYOUT
        cols = conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                            "table_schema = %s AND table_name = 'postings'", (t.name,))  # fmt: skip
        assert {r[0] for r in cols} == {"term", "doc_key", "tf", "dl"}
        opts = conn.execute(f"SELECT reloptions FROM pg_class WHERE oid = '{s}.postings'"
                            "::regclass").fetchone()[0]  # fmt: skip
        assert "autovacuum_vacuum_insert_scale_factor=0.05" in opts  # vacuumed sooner
    with Index.open(target, encoder=encoder(), readonly=True) as idx:
        idx.check()
        assert len(idx) == 33


def test_check_finds_a_posting_with_another_length(pg_target: Any) -> None:
    import psycopg

    from embedstack.errors import IndexCorrupt

    target = pg_target()
    with Index.create(target, encoder=encoder()) as idx:
        idx.add(docs(5))
    t = parse_uri(target)
    with psycopg.connect(t.conninfo, autocommit=True) as conn:
        conn.execute(f'UPDATE "{t.name}".postings SET dl = dl + 1 WHERE term = '
                     f'(SELECT min(term) FROM "{t.name}".postings)')  # fmt: skip
    with (
        Index.open(target, encoder=encoder()) as idx,
        pytest.raises(IndexCorrupt, match="carry another length"),
    ):
        idx.check()
