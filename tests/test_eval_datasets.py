"""Tests for embedstack.eval.datasets: BEIR and STS readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedstack.errors import InvalidInput
from embedstack.eval import (
    BeirDataset,
    Document,
    evaluate,
    iter_corpus,
    load_beir,
    load_corpus,
    load_sts,
)

DATASETS = Path(__file__).parents[1].parent / "shared" / "datasets"


def _jsonl(path: Path, rows: list[object]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    _jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Cats", "text": "Cats purr.", "metadata": {"url": "u1"}},
            {"_id": "d2", "title": "", "text": "  No title here. "},
            {"_id": "d3", "text": "Missing title key."},
            {"_id": 4, "title": "Numeric id", "text": ""},
        ],
    )
    _jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q3", "text": "third", "metadata": {}},
            {"_id": "q1", "text": "first"},
            {"_id": "q2", "text": "second, unjudged in test"},
            {"_id": "q9", "text": "ninth"},
        ],
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td2\t2\nq1\td3\t0\nq3\td1\t1\n"
    )
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    return root


def test_load_beir_restricts_queries_in_file_order(beir_dir: Path) -> None:
    ds = load_beir(beir_dir)
    assert isinstance(ds, BeirDataset)
    assert ds.name == "toy"
    assert ds.split == "test"
    assert ds.corpus_path == beir_dir / "corpus.jsonl"
    assert list(ds.queries) == ["q3", "q1", "q9"]  # queries.jsonl order, q2 not judged
    assert ds.queries["q1"] == "first"
    assert ds.qrels == {"q1": {"d1": 1, "d3": 0}, "q9": {"d2": 2}, "q3": {"d1": 1}}
    dev = load_beir(beir_dir, split="dev")
    assert dev.queries == {"q2": "second, unjudged in test"}


def test_load_beir_unknown_split_lists_available(beir_dir: Path) -> None:
    with pytest.raises(InvalidInput, match=r"train\.tsv.*available splits: dev, test"):
        load_beir(beir_dir, split="train")
    with pytest.raises(InvalidInput, match="invalid split"):
        load_beir(beir_dir, split="../test")


def test_load_beir_missing_qrels_folder(tmp_path: Path) -> None:
    _jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "x"}])
    with pytest.raises(InvalidInput, match=r"qrels.test\.tsv.*available splits: none"):
        load_beir(tmp_path)


def test_load_beir_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a directory"):
        load_beir(tmp_path / "absent")


def test_load_beir_judged_query_missing_from_queries(beir_dir: Path) -> None:
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq7\td1\t1\n")
    with pytest.raises(InvalidInput, match=r"1 judged queries are absent.*'q7'"):
        load_beir(beir_dir)


def test_load_beir_bad_qrels_lines(beir_dir: Path) -> None:
    qrels = beir_dir / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\thigh\n")
    with pytest.raises(InvalidInput, match=r"test\.tsv:3: relevance score 'high'"):
        load_beir(beir_dir)
    qrels.write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    with pytest.raises(InvalidInput, match=r"test\.tsv:2: expected 3 tab-separated"):
        load_beir(beir_dir)


def test_load_beir_malformed_query_line(beir_dir: Path) -> None:
    with (beir_dir / "queries.jsonl").open("a") as f:
        f.write('{"_id": "q10", "text": \n')
    with pytest.raises(InvalidInput, match=r"queries\.jsonl:5: malformed JSON"):
        load_beir(beir_dir)


def test_iter_corpus_documents_and_full_text(beir_dir: Path) -> None:
    docs = list(iter_corpus(beir_dir))
    assert [d.id for d in docs] == ["d1", "d2", "d3", "4"]
    assert docs[0] == Document("d1", "Cats", "Cats purr.", {"url": "u1"})
    assert [d.full_text for d in docs] == [
        "Cats Cats purr.",
        "No title here.",
        "Missing title key.",
        "Numeric id",
    ]
    assert docs[2].title == "" and docs[2].metadata == {}


def test_iter_corpus_accepts_dataset_folder_or_file(beir_dir: Path) -> None:
    from_folder = list(iter_corpus(beir_dir))
    assert list(iter_corpus(str(beir_dir / "corpus.jsonl"))) == from_folder
    assert list(iter_corpus(load_beir(beir_dir))) == from_folder


def test_load_corpus_parallel_lists(beir_dir: Path) -> None:
    ids, texts = load_corpus(beir_dir)
    assert ids == ["d1", "d2", "d3", "4"]
    assert texts == [d.full_text for d in iter_corpus(beir_dir)]


def test_iter_corpus_streams_before_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "ok"}\n\n{"_id": "b", "text": "ok"\n')
    stream = iter_corpus(path)
    assert next(stream).id == "a"  # yielded before the malformed line is read
    with pytest.raises(InvalidInput, match=r"corpus\.jsonl:3: malformed JSON") as info:
        next(stream)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"title": "t", "text": "no id"}', r":2: missing or invalid '_id'"),
        ('{"_id": null, "text": "x"}', r":2: missing or invalid '_id'"),
        ('["_id", "x"]', r":2: expected a JSON object"),
        ('{"_id": "b", "text": 5}', r":2: field 'text' must be a string"),
        ('{"_id": "b", "text": "x", "metadata": [1]}', r":2: field 'metadata' must be an object"),
        ('{"_id": "a", "text": "again"}', r":2: duplicate document id 'a'"),
    ],
)
def test_iter_corpus_bad_lines(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "ok"}\n' + line + "\n")
    with pytest.raises(InvalidInput, match=match):
        list(iter_corpus(path))


def test_iter_corpus_not_utf8_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "caf\xe9"}\n')
    with pytest.raises(InvalidInput, match=r"corpus\.jsonl: not UTF-8 text"):
        list(iter_corpus(path))


def test_iter_corpus_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="file not found"):
        list(iter_corpus(tmp_path))


def test_load_sts_columns_and_extras(tmp_path: Path) -> None:
    path = tmp_path / "sts.csv"
    path.write_text(
        "main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is styling her hair.\tA girl.\n"
        "\n"
        "main-news\theadlines\t2016\t0001\t5.000\tHe said \"hi\".\tShe said 'no'\tsrc\textra\n"
        "main-forums\tx\t2015\t0002\t0\t\tEmpty first sentence.\r\n"
    )
    sts = load_sts(path)
    assert sts.scores == [2.5, 5.0, 0.0]
    assert sts.sentences1 == ["A girl is styling her hair.", 'He said "hi".', ""]
    assert sts.sentences2 == ["A girl.", "She said 'no'", "Empty first sentence."]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("g\tf\ty\tid\t2.5\tonly one sentence", r":2: expected at least 7"),
        ("g\tf\ty\tid\tfive\ts1\ts2", r":2: score 'five'"),
        ("g\tf\ty\tid\tnan\ts1\ts2", r":2: score 'nan' is not finite"),
    ],
)
def test_load_sts_malformed(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "sts.csv"
    path.write_text("g\tf\ty\tid\t1.0\ta\tb\n" + line + "\n")
    with pytest.raises(InvalidInput, match=match):
        load_sts(path)


def test_load_sts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        load_sts(tmp_path / "sts.csv")


# --------------------------------------------------------------------------- tier 2


def _dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.slow
def test_scifact_counts_match_readme() -> None:
    root = _dataset("scifact")
    ds = load_beir(root, split="test")
    assert len(ds.queries) == 300
    assert sum(len(docs) for docs in ds.qrels.values()) == 339
    ids, texts = load_corpus(ds)
    assert len(ids) == 5183 == len(set(ids))
    assert all(texts)
    train = load_beir(root, split="train")
    assert len(train.qrels) == 809
    assert sum(len(docs) for docs in train.qrels.values()) == 919
    # The qrels as a run is a perfect ranking.
    perfect = {q: {d: float(r) for d, r in docs.items()} for q, docs in ds.qrels.items()}
    scores = evaluate(ds.qrels, perfect, [10])
    assert scores["ndcg@10"] == pytest.approx(1.0)
    assert scores["mrr@10"] == pytest.approx(1.0)


@pytest.mark.slow
def test_nfcorpus_counts_match_readme() -> None:
    root = _dataset("nfcorpus")
    ds = load_beir(root, split="test")
    assert len(ds.queries) == 323
    assert sum(len(docs) for docs in ds.qrels.values()) == 12334
    assert sum(1 for _ in iter_corpus(ds)) == 3633


@pytest.mark.slow
def test_stsb_counts_match_readme() -> None:
    sts = load_sts(_dataset("stsb") / "sts-test.csv")
    assert len(sts.scores) == len(sts.sentences1) == len(sts.sentences2) == 1379
    assert all(0.0 <= s <= 5.0 for s in sts.scores)
