"""Reranker training on a tiny synthetic BEIR folder with a tiny random BERT (tier 1)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from embedstack import HashEncoder  # noqa: E402
from embedstack.errors import InvalidInput  # noqa: E402
from embedstack.rerank import CrossEncoder, SplitCrossEncoder, load_reranker  # noqa: E402
from embedstack.train import (  # noqa: E402
    RerankerConfig,
    mine_hard_negatives,
    select_negatives,
    train_reranker,
)
from embedstack.train.negatives import false_negative_threshold  # noqa: E402
from embedstack.train.reranker import Group, build_groups  # noqa: E402
from test_rerank import build_tiny_classifier  # noqa: E402

TOPICS = [
    ("cats", "Cats purr and sleep in the sun; a cat hunts mice at night."),
    ("vaccines", "The vaccine trial enrolled elderly patients and measured antibody response."),
    ("markets", "Stock markets fell as bond yields rose and investors sold shares."),
    ("proteins", "Protein folding depends on temperature, pH and chaperone molecules."),
    ("weather", "Heavy rain and strong winds are expected across the northern coast."),
]
FILLER = [
    "The committee met on Monday to discuss the annual budget.",
    "Gardening tips for growing tomatoes in small pots.",
    "A history of the bicycle from the velocipede to today.",
    "Notes on the grammar of medieval Latin manuscripts.",
    "How to tune a guitar by ear with harmonics.",
]


def make_dataset(root: Path) -> Path:
    """20 docs, 5 train queries (one judged positive each) and a test split that differs."""
    docs = []
    for i, (topic, text) in enumerate(TOPICS):
        docs.append({"_id": f"pos{i}", "title": topic.title(), "text": text})
        docs.append(
            {"_id": f"near{i}", "title": "", "text": f"Unrelated {topic} trivia: " + FILLER[i]}
        )
        docs.append(
            {
                "_id": f"other{i}",
                "title": "",
                "text": FILLER[(i + 1) % 5] + " " + FILLER[(i + 2) % 5],
            }
        )
    for i in range(5):
        docs.append({"_id": f"misc{i}", "title": "Misc", "text": FILLER[i] + f" Item {i}."})
    queries = [{"_id": f"q{i}", "text": f"what about {topic}? {text.split(';')[0].split(',')[0]}"}
               for i, (topic, text) in enumerate(TOPICS)]  # fmt: skip
    queries.append({"_id": "qtest", "text": "a query judged only in the test split"})
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels").mkdir()
    rows = ["query-id\tcorpus-id\tscore"] + [f"q{i}\tpos{i}\t1" for i in range(5)]
    (root / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nqtest\tmisc0\t1\n")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    data = make_dataset(root / "data")
    texts = [json.loads(line)["text"] for line in (data / "corpus.jsonl").read_text().splitlines()]
    # no dropout: 20 training pairs are memorised within a few seconds
    base = build_tiny_classifier(
        root / "base", texts + [t for _, t in TOPICS], bare=True, dropout=0.0
    )
    return data, base


@pytest.fixture(scope="module")
def trained(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, base = setup
    out = tmp_path_factory.mktemp("out") / "reranker"
    train_reranker(data, out=out, base=base, miner=HashEncoder(64), epochs=15,
                   negatives_per_query=3, batch_size=8, lr=3e-3, max_length=64, log_every=3,
                   show_progress=False, threads=1)  # fmt: skip
    return out


def test_training_writes_a_loadable_folder(trained: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_log.jsonl",
                 "training_args.json", "tokenizer_config.json"):  # fmt: skip
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert len(config["id2label"]) == 1
    assert json.loads((trained / "tokenizer_config.json").read_text())["model_max_length"] == 64
    args = json.loads((trained / "training_args.json").read_text())
    assert args["split"] == "train" and args["groups"] == 5 and args["result"]["steps"] > 0
    ce = CrossEncoder(trained, backend="torch")
    assert ce.max_length == 64 and ce.num_labels == 1  # the training length is the default
    assert CrossEncoder(trained, backend="torch", max_length=128).max_length == 128
    assert ce.score("cats", ["Cats purr.", "Stocks fell."]).shape == (2,)


def test_loss_decreases_and_log_is_complete(trained: Path) -> None:
    lines = [json.loads(x) for x in (trained / "training_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == sorted(x["step"] for x in lines)
    for line in lines:
        assert {"step", "loss", "pairs_per_s", "elapsed_s", "lr", "epoch"} <= set(line)
        assert line["pairs_per_s"] > 0
    first = np.mean([x["loss"] for x in lines[:3]])
    last = np.mean([x["loss"] for x in lines[-3:]])
    assert last < 0.5 * first, (first, last)


def read_data(data: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({doc id: title + text}, {query id: query})`` of a test dataset."""
    rows = [json.loads(x) for x in (data / "corpus.jsonl").read_text().splitlines()]
    docs = {d["_id"]: (d["title"] + " " + d["text"]).strip() for d in rows}
    queries = {
        json.loads(x)["_id"]: json.loads(x)["text"]
        for x in (data / "queries.jsonl").read_text().splitlines()
    }
    return docs, queries


def training_hits(reranker: Any, data: Path) -> int:
    """How many of the 5 training queries get their judged positive ranked first."""
    docs, queries = read_data(data)
    ids = list(docs)
    texts = [docs[d] for d in ids]
    return sum(
        ids[reranker.rerank(queries[f"q{i}"], texts, top_n=1)[0][0]] == f"pos{i}" for i in range(5)
    )


def group_hits(reranker: Any, data: Path, negatives: Path) -> int:
    """How many training groups (positive + its mined negatives) get the positive first."""
    docs, queries = read_data(data)
    hits = 0
    for line in negatives.read_text().splitlines():
        group = json.loads(line)
        candidates = [group["positive_id"], *group["negatives"]]
        scores = reranker.score(queries[group["query_id"]], [docs[d] for d in candidates])
        hits += int(np.argmax(scores) == 0)
    return hits


def test_trained_model_ranks_training_positives_first(
    trained: Path, setup: tuple[Path, Path]
) -> None:
    assert training_hits(CrossEncoder(trained, backend="torch"), setup[0]) >= 4


def test_split_layer_trains_a_split_cross_encoder(
    trained: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    """``split_layer`` trains a PreTTR cross-encoder: recorded in config.json, loaded as a
    SplitCrossEncoder, and it learns to put each training positive above its negatives (one
    joint layer of 32 dimensions does not generalise to the whole corpus as the plain
    model does: that is left to the SciFact benchmark); a split that
    leaves no joint layer, or no room for documents, is refused before any work."""
    data, base = setup
    out = tmp_path / "split"
    train_reranker(data, out=out, base=base, miner=None, split_layer=1, query_length=16,
                   negatives_file=trained / "hard_negatives.jsonl", epochs=15,
                   negatives_per_query=3, batch_size=8, lr=3e-3, max_length=64, threads=1,
                   show_progress=False)  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["embedstack_split"] == {"layer": 1, "query_length": 16}
    reranker = load_reranker(out, backend="torch")
    assert isinstance(reranker, SplitCrossEncoder) and reranker.max_length == 64
    assert group_hits(reranker, data, trained / "hard_negatives.jsonl") >= 4
    depth = config["num_hidden_layers"]
    with pytest.raises(InvalidInput, match="joint"):
        train_reranker(data, out=tmp_path / "a", base=base, miner=None, split_layer=depth)
    with pytest.raises(InvalidInput, match="query_length"):
        train_reranker(data, out=tmp_path / "b", base=base, miner=None, split_layer=1,
                       query_length=63, max_length=64)  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_saved_negatives_can_be_reused(
    trained: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    data, base = setup
    saved = trained / "hard_negatives.jsonl"
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert {r["query_id"] for r in records} == {f"q{i}" for i in range(5)}
    assert all(len(r["negatives"]) == 3 and f"pos{r['query_id'][1:]}" not in r["negatives"]
               for r in records)  # fmt: skip
    out = tmp_path / "again"
    result = train_reranker(data, out=out, base=base, miner=None, negatives_file=saved,
                            negatives_per_query=2, max_length=32, threads=1)  # fmt: skip
    assert result.pairs == 5 * (1 + 2)
    reused = [json.loads(line) for line in (out / "hard_negatives.jsonl").read_text().splitlines()]
    assert reused == [{**r, "negatives": r["negatives"][:2]} for r in records]
    # a line without positive_id (per-query files) serves every positive of its query
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text(json.dumps({"query_id": "q1", "negatives": ["misc0", "misc1"]}) + "\n")
    result = train_reranker(data, out=tmp_path / "legacy", base=base, miner=None,
                            negatives_file=legacy, max_length=32, threads=1)  # fmt: skip
    assert result.pairs == 1 + 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query_id": "q0", "negatives": ["not-a-doc"]}) + "\n")
    with pytest.raises(InvalidInput, match="not in the corpus"):
        train_reranker(data, out=tmp_path / "x", base=base, negatives_file=bad)


def test_a_config_trains_as_its_keywords_do(
    trained: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    """``train_reranker(config)`` and ``train_reranker(folder, **fields)`` are one run:
    training_args.json records every option of the config (the same seed gives the same
    log), and keywords given with a config replace its fields."""
    data, base = setup
    options = {"base": base, "miner": None, "negatives_file": trained / "hard_negatives.jsonl",
               "negatives_per_query": 2, "max_length": 32, "threads": 1, "log_every": 1,
               "show_progress": False}  # fmt: skip
    config = RerankerConfig(dataset_dir=data, out=tmp_path / "a", **options)
    first = train_reranker(config)
    second = train_reranker(data, out=tmp_path / "b", **options)
    third = train_reranker(config, out=tmp_path / "c", epochs=2)
    assert first.pairs == second.pairs == 5 * (1 + 2) and third.pairs == 2 * first.pairs
    recorded = json.loads((tmp_path / "a" / "training_args.json").read_text())
    assert recorded["trainer"] == "reranker"
    assert {k: recorded[k] for k in config.record()} == config.record()
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "training_log.jsonl").read_text()
               .splitlines()] for d in ("a", "b")]  # fmt: skip
    assert losses[0] == losses[1]


def test_listwise_loss_trains(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, base = setup
    result = train_reranker(data, out=tmp_path / "lw", base=base, miner=HashEncoder(64),
                            loss="listwise", epochs=2, negatives_per_query=3, batch_size=4,
                            max_length=48,
                            max_pairs=8, show_progress=False, threads=1, log_every=1)  # fmt: skip
    assert result.pairs == 2 * 8  # two groups of 1 + 3 pairs per epoch
    assert result.steps == 2 * 2  # one group of 4 pairs per step
    assert np.isfinite(result.last_loss)


def test_margin_mse_loss_matches_its_formula() -> None:
    import torch

    from embedstack.train.reranker import group_loss

    logits = torch.tensor([2.0, 0.5, -1.0, 1.0, 3.0])  # groups [pos, n, n] and [pos, n]
    teacher = [4.0, 1.0, 0.0, 0.0, 1.0]
    value = group_loss(torch, "margin-mse", logits, teacher, [3, 2])
    margins = [(2.0 - 0.5) - (4.0 - 1.0), (2.0 + 1.0) - (4.0 - 0.0), (1.0 - 3.0) - (0.0 - 1.0)]
    assert float(value) == pytest.approx(np.mean(np.square(margins)))
    # margins ignore a per-group shift: a student equal to the teacher + c_g has zero loss
    shifted = torch.tensor([t + c for t, c in zip(teacher, [5, 5, 5, -2, -2], strict=True)])
    assert float(group_loss(torch, "margin-mse", shifted, teacher, [3, 2])) == 0.0


def test_margin_mse_distils_the_teacher(
    trained: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    """A student distilled from the trained model learns its margins on the training pairs:
    the loss falls and the student's margins carry most of the teacher's."""
    data, base = setup
    out = tmp_path / "student"
    result = train_reranker(data, out=out, base=base, miner=None, teacher=trained,
                            loss="margin-mse", negatives_file=trained / "hard_negatives.jsonl",
                            negatives_per_query=3, epochs=15, batch_size=8, lr=3e-3,
                            max_length=64, log_every=3, show_progress=False,
                            threads=1)  # fmt: skip
    assert result.last_loss < 0.2 * result.first_loss, result
    args = json.loads((out / "training_args.json").read_text())
    assert args["loss"] == "margin-mse" and args["teacher"].startswith(str(trained) + "@")
    assert args["teacher_seconds"] >= 0
    queries = {json.loads(x)["_id"]: json.loads(x)["text"]
               for x in (data / "queries.jsonl").read_text().splitlines()}  # fmt: skip
    corpus = {json.loads(x)["_id"]: (json.loads(x)["title"] + " " + json.loads(x)["text"]).strip()
              for x in (data / "corpus.jsonl").read_text().splitlines()}  # fmt: skip
    records = [json.loads(x) for x in (trained / "hard_negatives.jsonl").read_text().splitlines()]

    def margins(model: Path) -> np.ndarray:
        ce = CrossEncoder(model, backend="torch", activation="none", max_length=64)
        rows = []
        for r in records:
            s = ce.score(queries[r["query_id"]], [corpus[r["positive_id"]]]
                         + [corpus[d] for d in r["negatives"]])  # fmt: skip
            rows.extend(s[0] - s[1:])
        return np.asarray(rows)

    target = margins(trained)
    student_error = np.mean((margins(out) - target) ** 2)
    flat_error = np.mean(target**2)  # a student scoring every pair alike
    assert student_error < 0.1 * flat_error, (student_error, flat_error)


def test_teacher_goes_with_margin_mse_only(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, base = setup
    with pytest.raises(InvalidInput, match="teacher"):
        train_reranker(data, out=tmp_path / "a", base=base, miner=None, loss="margin-mse")
    with pytest.raises(InvalidInput, match="teacher"):
        train_reranker(data, out=tmp_path / "a", base=base, miner=None, teacher=base)
    assert not (tmp_path / "a").exists()


def test_layers_keeps_the_first_layers_of_the_base(
    trained: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    """``layers=1`` trains and saves a one-layer cross-encoder whose weights start from the
    base's first layer; more layers than the base has is refused before any work."""
    from safetensors.numpy import load_file

    data, base = setup
    depth = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    assert depth >= 2
    out = tmp_path / "shallow"
    train_reranker(data, out=out, base=base, miner=None, layers=1, lr=1e-9, max_pairs=4,
                   negatives_file=trained / "hard_negatives.jsonl", negatives_per_query=1,
                   max_length=32, threads=1, show_progress=False)  # fmt: skip
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    saved = load_file(str(out / "model.safetensors"))
    assert not any(".layer.1." in key for key in saved)
    original = load_file(str(base / "model.safetensors"))
    suffix = "encoder.layer.0.attention.self.query.weight"
    [ours] = [v for k, v in saved.items() if k.endswith(suffix)]
    [theirs] = [v for k, v in original.items() if k.endswith(suffix)]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)  # lr 1e-9: still the base's layer 0
    assert CrossEncoder(out, backend="torch").score("cats", ["Cats purr."]).shape == (1,)
    with pytest.raises(InvalidInput, match="only"):
        train_reranker(data, out=tmp_path / "deep", base=base, miner=None, layers=depth + 1)
    assert not (tmp_path / "deep").exists()


def test_bad_arguments(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, base = setup
    with pytest.raises(InvalidInput, match="loss"):
        train_reranker(data, out=tmp_path / "a", base=base, miner=None, loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="epochs"):
        train_reranker(data, out=tmp_path / "a", base=base, miner=None, epochs=0)
    with pytest.raises(InvalidInput, match="no qrels for split 'dev'"):
        train_reranker(data, out=tmp_path / "a", base=base, miner=None, split="dev")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(InvalidInput, match="not empty"):
        train_reranker(data, out=tmp_path / "full", base=base, miner=None)
    with pytest.raises(InvalidInput, match="not a reranker folder"):
        train_reranker(data, out=tmp_path / "full", base=base, miner=None, overwrite=True)
    assert (tmp_path / "full" / "keep.txt").is_file()
    with pytest.raises(InvalidInput, match="random_negatives"):
        train_reranker(data, out=tmp_path / "b", base=base, miner=None, random_negatives=-1)
    assert not (tmp_path / "b").exists()


def test_random_negatives_are_never_positives_and_are_seeded() -> None:
    corpus = {f"d{i}": f"text {i}" for i in range(40)}
    queries = {"q": "query", "r": "other"}
    qrels = {"q": {"d0": 1, "d1": 2, "d2": 0}, "r": {"d3": 1}}
    mined = {"q": {"d0": ["d5"], "d1": []}, "r": {}}

    def draw(seed: int) -> list[Group]:
        return build_groups(queries, qrels, corpus, mined, random_negatives=4,
                            rng=random.Random(seed))  # fmt: skip

    groups = draw(1)
    # d1 and d3 had no hard negative: random negatives give them a group too
    assert [g.positive for g in groups] == ["text 0", "text 1", "text 3"]
    for group, judged in zip(groups, (qrels["q"], qrels["q"], qrels["r"]), strict=True):
        assert len(group.negatives) == len(set(group.negatives))
        assert not {f"text {d[1:]}" for d, r in judged.items() if r > 0} & set(group.negatives)
    assert groups[0].negatives[0] == "text 5" and len(groups[0].negatives) == 5
    assert draw(1) == groups
    assert draw(2) != groups
    assert len(build_groups(queries, qrels, corpus, mined)) == 1  # hard negatives only


# -- negative mining --------------------------------------------------------------------------


def test_select_negatives_never_returns_positives_and_interleaves() -> None:
    bm25 = ["p1", "a", "b", "p2", "c"]
    dense = ["p2", "d", "a", "e"]
    chosen, source, dropped = select_negatives([bm25, dense], {"p1", "p2"}, None, None, per_query=4)
    assert chosen == ["a", "d", "b", "e"] and source == [0, 1, 0, 1] and dropped == 0
    assert not {"p1", "p2"} & set(chosen)


def test_select_negatives_drops_near_positive_candidates() -> None:
    scores = {"a": 0.85, "b": 0.77, "c": 0.75, "d": 0.30}
    # threshold = 0.95 * 0.8 = 0.76: a and b are likely unjudged positives
    chosen, _, dropped = select_negatives([["a", "b", "c", "d"]], set(), scores, 0.8, per_query=5)
    assert chosen == ["c", "d"] and dropped == 2
    assert false_negative_threshold(0.8, 0.95) == pytest.approx(0.8 - 0.05 * 0.8)
    assert false_negative_threshold(-0.2, 0.95) == pytest.approx(-0.2 - 0.05 * 0.2)
    chosen, _, dropped = select_negatives([["a", "b", "c", "d"]], set(), scores, 0.8, per_query=5,
                                          max_ratio=1.0)  # fmt: skip
    assert chosen == ["b", "c", "d"] and dropped == 1


def test_mine_hard_negatives_with_bm25_and_dense(hash_model: str) -> None:
    from embedstack import load_encoder

    ids = [f"d{i}" for i in range(8)]
    texts = ["cats purr softly", "cats purr loudly", "cats sleep", "dogs bark", "dogs run",
             "stock markets", "Cats purr, softly!", "rain"]  # fmt: skip
    queries = {"q": "cats purr softly"}
    encoder = load_encoder(hash_model)
    mined = mine_hard_negatives(queries, {"q": {"d0"}}, ids, texts, encoder=encoder,
                                per_query=5, depth=8, max_ratio=0.95)  # fmt: skip
    assert list(mined.negatives["q"]) == ["d0"]
    negs = mined.negatives["q"]["d0"]
    assert "d0" not in negs and len(negs) == 5
    q = encoder.encode_queries([queries["q"]])[0]
    d = encoder.encode_documents(texts)
    threshold = false_negative_threshold(float(q @ d[0]), 0.95)
    assert all(float(q @ d[ids.index(n)]) <= threshold for n in negs)
    assert mined.dropped == sum(float(q @ d[i]) > threshold for i in range(1, 8))
    assert mined.dropped >= 1  # "Cats purr, softly!" is the positive, punctuated
    assert set(mined.sources) == {"bm25", "dense"}
    bm25_only = mine_hard_negatives(queries, {"q": {"d0"}}, ids, texts, encoder=None, per_query=2)
    assert bm25_only.negatives["q"]["d0"][0] == "d6" and bm25_only.dropped == 0
    assert set(bm25_only.negatives["q"]["d0"]) <= {"d1", "d2", "d6"}  # documents sharing a term


class FixedEncoder:
    """Unit vectors chosen by the test: documents by text, every query the same."""

    def __init__(self, vectors: dict[str, list[float]], query: list[float]) -> None:
        self.vectors = {t: np.asarray(v, np.float32) / np.linalg.norm(v)
                        for t, v in vectors.items()}  # fmt: skip
        self.query = np.asarray(query, np.float32) / np.linalg.norm(query)
        self.name = self.model_id = "fixed"
        self.dim = len(query)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])

    encode_documents = encode

    def encode_queries(self, texts: Iterable[str]) -> np.ndarray:
        return np.stack([self.query for _ in texts])


def test_false_negative_threshold_is_per_positive() -> None:
    # scores against the query: strong 1.0, weak 0.6; candidates 0.9, 0.7, 0.5, 0.1
    angles = {"strong": 1.0, "weak": 0.6, "c90": 0.9, "c70": 0.7, "c50": 0.5, "c10": 0.1}
    vectors = {k: [c, float(np.sqrt(1 - c * c))] for k, c in angles.items()}
    encoder = FixedEncoder(vectors, [1.0, 0.0])
    ids = list(vectors)
    mined = mine_hard_negatives({"q": "query"}, {"q": {"strong", "weak"}}, ids, ids,
                                encoder=encoder, per_query=4, depth=6, use_bm25=False)  # fmt: skip
    # strong: threshold 0.95 -> every candidate; weak: threshold 0.57 -> 0.5 and 0.1 only
    assert mined.negatives["q"]["strong"] == ["c90", "c70", "c50", "c10"]
    assert mined.negatives["q"]["weak"] == ["c50", "c10"]
    assert mined.dropped == 2 and mined.sources == {"dense": 6}


def test_mining_rejects_queries_without_positives() -> None:
    with pytest.raises(InvalidInput, match="no judged positive"):
        mine_hard_negatives({"q": "x"}, {"q": {"missing"}}, ["a"], ["text"], encoder=None)


# -- CLI --------------------------------------------------------------------------------------


def test_cli_trains_a_reranker(
    setup: tuple[Path, Path], tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack.cli import run

    data, base = setup
    out = tmp_path / "cli-model"
    args = ["train", "reranker", str(data), "--out", str(out), "--base", str(base)]
    args += ["--miner", hash_model, "--negatives", "2", "--max-length", "32", "--threads", "1"]
    assert run(args) == 0
    assert "trained" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file()
    assert run(args) == 2  # the folder is not empty now
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--overwrite" in err and "\n" not in err
    assert run([*args, "--overwrite", "--loss", "listwise"]) == 0
    student = tmp_path / "cli-student"
    distil = [*args[:3], "--out", str(student), *args[5:], "--loss", "margin-mse"]
    assert run([*distil, "--teacher", str(out)]) == 0
    assert json.loads((student / "training_args.json").read_text())["teacher"].startswith(str(out))


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        (["--loss", "hinge"], 2, "--loss"),
        (["--loss", "margin-mse"], 2, "--teacher"),
        (["--split", "dev"], 2, "no qrels for split 'dev'"),
        (["--base", "/no/such/model"], 3, "not found"),
    ],
)
def test_cli_errors_are_one_line(
    setup: tuple[Path, Path],
    tmp_path: Path,
    extra: list[str],
    code: int,
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from embedstack.cli import run

    data, base = setup
    args = ["train", "reranker", str(data), "--out", str(tmp_path / "m"), "--base", str(base)]
    assert run([*args, "--miner", "none", *extra]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
