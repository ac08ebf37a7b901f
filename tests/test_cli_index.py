"""CLI for the index: create / add / search / delete / stats / check, and bad input.

Malformed JSONL: without ``--skip-invalid`` the whole command is refused and the index is
left unchanged; with it, the valid documents are added and each bad line is reported with
its file and line number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedstack.cli import run
from embedstack.index import Index


def _index(tmp_path: Path, hash_model: str) -> Path:
    path = tmp_path / "idx"
    assert run(["index", "create", str(path), "--model", hash_model]) == 0
    return path


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = [
    json.dumps({"id": "a", "text": "cats purr on warm mats", "metadata": {"year": 2021}}),
    json.dumps({"id": "b", "text": "stock markets fell on rate fears", "metadata": {"year": 2019}}),
]


def test_add_search_delete_round_trip(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "c.md").write_text("# Kittens\nkittens chase the cat around", encoding="utf-8")
    docs = _jsonl(tmp_path / "docs.jsonl", GOOD)
    assert run(["index", "add", str(path), str(docs), str(notes)]) == 0
    assert "3 added" in capsys.readouterr().out
    assert run(["index", "add", str(path), str(docs)]) == 0  # same content: nothing re-embedded
    assert "0 added, 0 updated, 2 unchanged" in capsys.readouterr().out
    code = run(["search", str(path), "cats purr", "--mode", "bm25", "-k", "2", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and rows[0]["id"] == "a" and rows[0]["rank"] == 1
    run(["search", str(path), "cats", "--mode", "bm25", "--filter", "year>=2020", "--json"])
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == ["a"]
    assert run(["index", "delete", str(path), "a"]) == 0
    assert run(["index", "check", str(path)]) == 0
    capsys.readouterr()
    assert run(["index", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_docs"] == 2


def test_malformed_jsonl_refuses_the_whole_command(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    bad = _jsonl(tmp_path / "bad.jsonl", [GOOD[0], "{not json", json.dumps({"id": "x"}), GOOD[1]])
    capsys.readouterr()
    assert run(["index", "add", str(path), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing was added" in err
    assert "bad.jsonl:2" in err and "bad.jsonl:3" in err and "--skip-invalid" in err
    with Index.open(path) as idx:
        assert len(idx) == 0


def test_skip_invalid_keeps_valid_lines_and_reports_the_rest(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    bad = _jsonl(tmp_path / "bad.jsonl", [GOOD[0], "{not json", GOOD[1]])
    capsys.readouterr()
    assert run(["index", "add", str(path), str(bad), "--skip-invalid"]) == 0
    captured = capsys.readouterr()
    assert "bad.jsonl:2" in captured.err and "2 added" in captured.out
    with Index.open(path) as idx:
        assert sorted(idx.get(i)["id"] for i in ("a", "b")) == ["a", "b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "delete", "{idx}", "nope"], "nope"),
        (["search", "{idx}", "cats", "-k", "0"], "k"),
        (["search", "{idx}", "cats", "--mode", "fuzzy"], "mode"),
        (["search", "{idx}", "   "], "query"),
        (["index", "add", "{idx}", "{missing}"], "missing"),
        (["index", "create", "{idx}", "--model", "{model}"], "not an empty directory"),
        (["index", "stats", "{nowhere}"], "nowhere"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path,
    hash_model: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    path = _index(tmp_path, hash_model)
    run(["index", "add", str(path), str(_jsonl(tmp_path / "d.jsonl", GOOD))])
    before = sorted(p.name for p in (path / "dense").iterdir())
    capsys.readouterr()
    values = {
        "idx": str(path),
        "missing": str(tmp_path / "missing.jsonl"),
        "model": hash_model,
        "nowhere": str(tmp_path / "nowhere"),
    }
    code = run([a.format(**values) for a in args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err
    with Index.open(path) as idx:
        assert len(idx) == 2
    assert sorted(p.name for p in (path / "dense").iterdir()) == before


def test_sparse_index_from_the_cli(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`index create --sparse FOLDER` stores SPLADE postings that `search --mode sparse` reads."""
    from test_splade_helpers import build_tiny_mlm

    folder = build_tiny_mlm(tmp_path / "mlm")
    path = tmp_path / "idx"
    assert run(["index", "create", str(path), "--model", hash_model, "--sparse", str(folder)]) == 0
    docs = _jsonl(tmp_path / "docs.jsonl", GOOD)
    assert run(["index", "add", str(path), str(docs)]) == 0
    capsys.readouterr()
    assert run(["search", str(path), "cats purr", "--mode", "sparse", "-k", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    with Index.open(path) as index:
        assert index.stats().n_docs == 2
    # a dense-only index refuses sparse search with a one-line error, not a traceback
    plain = _index(tmp_path / "plain", hash_model)
    assert run(["index", "add", str(plain), str(docs)]) == 0
    capsys.readouterr()
    assert run(["search", str(plain), "cats", "--mode", "sparse"]) != 0
    err = capsys.readouterr().err
    assert "sparse" in err
    assert "`embedstack index create NEW_DIR --sparse splade-tiny`" in err  # not Python


# --- issue 15: what a new user hit ------------------------------------------------------------


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


HTML = (
    "<html><head><title>Cat care</title><style>p {color: red}</style></head>"
    "<body><h1>Cats</h1><p>Cats purr &amp; sleep.</p><script>alert('x')</script></body></html>"
)


def test_add_reads_common_formats_and_says_what_it_skipped(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    docs = _tree(
        tmp_path / "docs",
        {
            **{f"guide/p{i}.rst": f"Part {i}\n=======\n\nbody of part {i}\n" for i in range(3)},
            "page.html": HTML,
            "notes.md": "# Notes\nsome notes",
            "plain.txt": "plain text",
            "image.png": b"\x89PNG\r\n",
            "blob.txt": b"text\x00with a NUL byte",
            ".git/config": "[core]",
            ".venv/lib/site.md": "# venv",
            "node_modules/pkg/README.md": "# pkg",
            ".hidden.md": "# hidden",
        },
    )
    capsys.readouterr()
    assert run(["index", "add", str(path), str(docs)]) == 0
    captured = capsys.readouterr()
    assert "6 added" in captured.out
    for reason in (
        "1 unsupported type .png",
        "1 binary file (NUL byte)",
        "folder .git/",
        "folder .venv/",
        "folder node_modules/",
        "1 hidden file",
    ):
        assert reason in captured.err, reason
    with Index.open(path, readonly=True) as index:
        page = index.get("docs/page.html")
        rst = index.get("docs/guide/p1.rst")
        assert index.get("docs/blob.txt") is None
    assert page is not None and rst is not None
    assert page["title"] == "Cat care" and page["text"] == "Cats\nCats purr & sleep."
    assert rst["title"] == "Part 1"


def test_add_include_and_exclude_globs(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    docs = _tree(tmp_path / "d", {"a.rst": "alpha", "b.md": "beta", "sub/c.rst": "gamma",
                                  "sub/d.txt": "delta"})  # fmt: skip
    args = ["index", "add", str(path), str(docs), "--include", "*.rst", "--exclude", "sub/*"]
    assert run(args) == 0
    captured = capsys.readouterr()
    assert "1 added" in captured.out
    assert "2 not matched by --include" in captured.err and "1 matched by --exclude" in captured.err
    with Index.open(path, readonly=True) as index:
        assert index.get("d/a.rst") is not None and len(index) == 1


def test_add_with_nothing_supported_is_an_error(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    docs = _tree(tmp_path / "imgs", {f"{i}.png": b"\x89PNG" for i in range(3)})
    capsys.readouterr()
    assert run(["index", "add", str(path), str(docs)]) == 2
    err = capsys.readouterr().err
    assert "nothing to add" in err and "3 unsupported type .png" in err


def test_add_beir_folder_reads_only_the_corpus(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    beir = _tree(
        tmp_path / "beir",
        {
            "corpus.jsonl": "\n".join(
                json.dumps({"_id": f"d{i}", "title": "t", "text": f"doc {i}"}) for i in range(3)
            ),  # fmt: skip
            "queries.jsonl": json.dumps({"_id": "q1", "text": "a query"}),
            "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
        },
    )
    assert run(["index", "add", str(path), str(beir)]) == 0
    assert "3 added" in capsys.readouterr().out
    with Index.open(path, readonly=True) as index:
        assert len(index) == 3 and index.get("q1") is None


def test_file_ids_do_not_collide_across_folders(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    a = _tree(tmp_path / "a", {"README.md": "# A\nabout apples"})
    b = _tree(tmp_path / "b", {"README.md": "# B\nabout bananas"})
    assert run(["index", "add", str(path), str(a)]) == 0
    assert run(["index", "add", str(path), str(b)]) == 0
    assert "1 added" in capsys.readouterr().out
    with Index.open(path, readonly=True) as index:
        assert len(index) == 2
        assert index.get("a/README.md")["text"] == "# A\nabout apples"  # type: ignore[index]
        assert index.get("b/README.md")["text"] == "# B\nabout bananas"  # type: ignore[index]
    # the same file given directly gets the same id: an update, not a second copy
    (a / "README.md").write_text("# A\nabout apricots", encoding="utf-8")
    capsys.readouterr()
    assert run(["index", "add", str(path), str(a / "README.md")]) == 0
    assert "0 added, 1 updated" in capsys.readouterr().out


def test_same_named_folders_are_refused_loudly(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    first = _tree(tmp_path / "x" / "docs", {"README.md": "first readme"})
    second = _tree(tmp_path / "y" / "docs", {"README.md": "second readme"})
    assert run(["index", "add", str(path), str(first)]) == 0
    capsys.readouterr()
    assert run(["index", "add", str(path), str(second)]) == 2
    err = capsys.readouterr().err
    assert "'docs/README.md' already holds a document from" in err and "--id-prefix" in err
    with Index.open(path, readonly=True) as index:
        assert index.get("docs/README.md")["text"] == "first readme"  # type: ignore[index]
    assert run(["index", "add", str(path), str(second), "--id-prefix", "y-docs"]) == 0
    with Index.open(path, readonly=True) as index:
        assert index.get("y-docs/README.md")["text"] == "second readme"  # type: ignore[index]


def test_ctrl_c_during_add_says_what_was_committed(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    path = _index(tmp_path, hash_model)
    docs = _jsonl(tmp_path / "d.jsonl", GOOD)
    original = Index.upsert
    calls: list[int] = []

    def upsert(self: Index, batch: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Index, "upsert", upsert)
    capsys.readouterr()
    assert run(["index", "add", str(path), str(docs), "--batch-size", "1"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 added, 0 updated, 0 unchanged committed before Ctrl-C" in err
    monkeypatch.setattr(Index, "upsert", original)
    with Index.open(path, readonly=True) as index:
        assert len(index) == 1


def test_plain_progress_lines_when_stderr_is_not_a_terminal(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import time

    path = _index(tmp_path, hash_model)
    big = _tree(tmp_path / "big", {"big.txt": "word " * 200_000})
    monkeypatch.delenv("EMBEDSTACK_NO_PROGRESS", raising=False)
    monkeypatch.setenv("EMBEDSTACK_PROGRESS_INTERVAL", "0.05")
    original = Index.upsert

    def slow(self: Index, batch: object) -> object:
        time.sleep(0.5)  # a long batch: lines must keep coming while it runs
        return original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Index, "upsert", slow)
    capsys.readouterr()
    assert run(["index", "add", str(path), str(big)]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("indexing:")]
    assert lines[0].startswith("indexing: 0/1 documents (0.0/1.0 MB)")
    assert len([x for x in lines if x.startswith("indexing: 0/1")]) >= 3
    assert lines[-1].startswith("indexing: 1/1 documents (1.0/1.0 MB)")
    monkeypatch.setenv("EMBEDSTACK_NO_PROGRESS", "1")
    assert run(["index", "add", str(path), str(big)]) == 0
    assert "indexing:" not in capsys.readouterr().err


def test_errors_say_the_command_to_run(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    docs = _jsonl(tmp_path / "d.jsonl", GOOD)
    capsys.readouterr()
    missing = tmp_path / "nowhere"
    for args in (["index", "add", str(missing), str(docs)], ["search", str(missing), "cats"]):
        assert run(args) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"error: no embedstack index at {missing}: create one with "
            f"`embedstack index create {missing}`"
        )
    assert run(["index", "create", str(path), "--model", hash_model]) == 2
    err = capsys.readouterr().err
    assert f"`embedstack index add {path} FILES`" in err and "Index." not in err
    with Index.open(path):  # another writer holds the lock
        assert run(["index", "add", str(path), str(docs)]) == 2
        err = capsys.readouterr().err
    assert "locked by another writer" in err and "readonly=True" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_lock_held_by_a_server_is_named(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from embedstack.errors import IndexLocked

    path = _index(tmp_path, hash_model)
    docs = _jsonl(tmp_path / "d.jsonl", GOOD)

    def held(*args: object, **kwargs: object) -> None:
        raise IndexLocked("locked", str(path), "pid 4242: embedstack serve --index idx")

    monkeypatch.setattr(Index, "open", held)
    capsys.readouterr()
    assert run(["index", "add", str(path), str(docs)]) == 2
    err = capsys.readouterr().err
    assert "held by a running server (pid 4242: embedstack serve --index idx)" in err
    assert "/v1/indexes/NAME/documents" in err


def test_search_json_includes_the_text(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    run(["index", "add", str(path), str(_jsonl(tmp_path / "d.jsonl", GOOD))])
    capsys.readouterr()
    assert run(["search", str(path), "cats purr", "-k", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["id"] == "a" and row["text"] == "cats purr on warm mats"


def test_search_default_mode_is_the_library_default(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack.index.protocols import DEFAULT_MODE

    path = _index(tmp_path, hash_model)
    run(["index", "add", str(path), str(_jsonl(tmp_path / "d.jsonl", GOOD))])
    capsys.readouterr()
    assert run(["search", str(path), "cats", "--json"]) == 0
    default = [json.loads(x)["ranks"] for x in capsys.readouterr().out.splitlines()]
    assert run(["search", str(path), "cats", "--mode", DEFAULT_MODE, "--json"]) == 0
    assert default == [json.loads(x)["ranks"] for x in capsys.readouterr().out.splitlines()]
    assert set(default[0]) == {"bm25", "dense"}  # hybrid: both retrievers ranked each hit


@pytest.mark.parametrize(
    ("condition", "needle"),
    [
        ("year=>2020", "did you mean year>=2020"),
        ("year>=", "no value"),
        ("year>=abc", "needs a number"),
        ("lang in", "no operator"),
        ("lang in a,,b", "comma-separated"),
    ],
)
def test_malformed_filters_are_errors(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str], condition: str,
    needle: str,
) -> None:  # fmt: skip
    path = _index(tmp_path, hash_model)
    run(["index", "add", str(path), str(_jsonl(tmp_path / "d.jsonl", GOOD))])
    capsys.readouterr()
    assert run(["search", str(path), "cats", "--filter", condition]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot parse filter") and needle in err
    assert len(err.splitlines()) == 1


def test_filter_in_operator(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    run(["index", "add", str(path), str(_jsonl(tmp_path / "d.jsonl", GOOD))])
    for condition, expected in (
        ("year in 2019,2018", ["b"]),
        ("year not in 2019", ["a"]),
        ("year in 2019, 2021", ["a", "b"]),
    ):
        capsys.readouterr()
        assert run(["search", str(path), "cats", "--filter", condition, "--json"]) == 0
        ids = sorted(json.loads(x)["id"] for x in capsys.readouterr().out.splitlines())
        assert ids == expected, condition


def test_parse_filter_args_in_and_ranges() -> None:
    from embedstack.errors import InvalidInput
    from embedstack.index.filters import parse_filter_args

    assert parse_filter_args(["lang in en, de", "year not in 2019"]) == {
        "lang": {"$in": ["en", "de"]},
        "year": {"$nin": [2019]},
    }
    assert parse_filter_args(["date>=2021-01-01", 'name<"m"', "note=x in y"]) == {
        "date": {"$gte": "2021-01-01"},
        "name": {"$lt": "m"},
        "note": "x in y",
    }
    for bad in ("year=>2020", "year>=", "year>=abc", "lang=", "year=<3", "tag in x,"):
        with pytest.raises(InvalidInput, match="cannot parse filter"):
            parse_filter_args([bad])


def test_html_to_text_drops_markup_scripts_and_styles() -> None:
    from embedstack.index.sources import html_to_text

    assert html_to_text(HTML) == ("Cat care", "Cats\nCats purr & sleep.")
    assert html_to_text("<h1>Only <b>h1</b></h1><p>x</p>") == ("Only h1", "Only h1\nx")


def test_a_line_that_is_not_utf8_is_a_problem_not_a_traceback(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _index(tmp_path, hash_model)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(GOOD[0].encode() + b"\n" + '{"id": "x", "text": "caf\xe9"}'.encode("latin-1"))
    capsys.readouterr()
    assert run(["index", "add", str(path), str(bad)]) == 2
    assert "bad.jsonl:2: not UTF-8 text" in capsys.readouterr().err


def test_ids_of_an_earlier_version_are_pointed_out(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files indexed with the old ids (relative to the folder) are named, not duplicated
    silently."""
    path = _index(tmp_path, hash_model)
    docs = _tree(tmp_path / "docs", {"README.md": "# Readme\nhello", "other.md": "other"})
    with Index.open(path) as index:  # what `index add IDX docs/` stored before
        index.add([{"id": "README.md", "text": "# Readme\nhello",
                    "metadata": {"path": str(docs / "README.md"), "suffix": ".md"}}])  # fmt: skip
    capsys.readouterr()
    assert run(["index", "add", str(path), str(docs)]) == 0
    err = capsys.readouterr().err
    assert "note: 1 of these files are also stored under the ids an earlier version" in err
    assert f"`embedstack index delete {path} README.md`" in err


def test_an_index_filled_by_a_hash_encoder_opens_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HashEncoder(N)`` names the index's model ``hash-N`` (no registry entry, no folder):
    the CLI builds the same encoder from that name instead of looking for weights."""
    from embedstack import HashEncoder

    path = tmp_path / "hashed"
    with Index.create(path, encoder=HashEncoder(48)) as index:
        index.add([{"id": "a", "text": "cats purr on warm mats"}, {"id": "b", "text": "rates"}])
    assert run(["search", str(path), "warm cats", "--mode", "dense", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["id"] == "a"
    monkeypatch.chdir(tmp_path)
    Path("hash-48").mkdir()  # a folder of that name is a model folder, as any other
    assert run(["index", "create", "other", "--model", "hash-48"]) != 0
    assert "hash-48" in capsys.readouterr().err and not Path("other").exists()
