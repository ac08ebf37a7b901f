"""Bi-encoder training (``train embedder``) with a tiny random BERT on generated data (tier 1)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from embedstack import Encoder, HashEncoder  # noqa: E402
from embedstack.encoders.loading import folder_spec  # noqa: E402
from embedstack.train import train_embedder  # noqa: E402
from embedstack.train.data import Group  # noqa: E402
from embedstack.train.embedder_batches import contrastive_batches  # noqa: E402
from embedstack.train.embedder_config import EmbedderConfig  # noqa: E402
from embedstack.train.embedder_data import corpus_pairs, load_embedder_data  # noqa: E402
from embedstack.train.embedder_model import Prefixes, dev_scores  # noqa: E402
from test_rerank import build_tiny_classifier, build_tokenizer  # noqa: E402

WORDS = ("falcon copper meadow violin glacier pepper harbor lantern orchid saddle quartz "
         "thunder walnut beacon cobalt dune ember fjord garnet hazel").split()  # fmt: skip
FILLER = ("the report said that a study of this topic was done last year by a small team "
          "in a lab near the old town and it found some results worth a note").split()  # fmt: skip


def make_corpus(root: Path, n_topics: int = 12, seed: int = 0) -> Path:
    """A BEIR folder: one answer document per topic word, each query naming two words of its
    answer; distractor documents share the filler text. Topics 0-1 are judged twice."""
    rng = random.Random(seed)
    docs, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for i in range(n_topics):
        word, other = WORDS[i], WORDS[(i + 7) % len(WORDS)]
        body = " ".join(rng.sample(FILLER, 10))
        docs.append({"_id": f"a{i}", "title": "", "text": f"{word} {other} {body}"})
        docs.append({"_id": f"x{i}", "title": "", "text": " ".join(rng.sample(FILLER, 14))})
        queries.append({"_id": f"q{i}", "text": f"{word} and {other}"})
        qrels.append(f"q{i}\ta{i}\t1")
    for i in range(2):  # a second judged positive: never a negative, never in the same batch
        docs.append({"_id": f"b{i}", "title": "", "text": f"{WORDS[i]} notes {FILLER[i]}"})
        qrels.append(f"q{i}\tb{i}\t1")
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir()
    (root / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    return root


def build_tiny_bert(folder: Path, texts: list[str], positions: int = 256) -> Path:
    """A random 2-layer BertModel (hidden 32, no dropout) with ``positions`` positions, and
    its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = build_tokenizer(texts)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=positions, initializer_range=0.2,
                        hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                            model_max_length=positions).save_pretrained(folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("emb")
    data = make_corpus(root / "data")
    texts = [json.loads(x)["text"] for x in (data / "corpus.jsonl").read_text().splitlines()]
    return data, build_tiny_bert(root / "base", texts + WORDS)


FAST: dict[str, Any] = dict(miner=HashEncoder(64), epochs=8, batch_size=6, lr=3e-3,
                            max_seq_length=32, dev_fraction=0.0, sts_file=None, threads=1,
                            show_progress=False, log_every=1)  # fmt: skip


@pytest.fixture(scope="module")
def trained(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, base = setup
    out = tmp_path_factory.mktemp("trained") / "model"
    train_embedder(data, out=out, base=str(base), **FAST)
    return out


def ranks(model: Any, data: Path, dim: int | None = None) -> list[int]:
    """The rank (1 = first) of each query's answer ``a{i}`` over the corpus, its other
    judged positive ``b{i}`` left out."""
    docs = [json.loads(x) for x in (data / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(x) for x in (data / "queries.jsonl").read_text().splitlines()]
    d = np.asarray(model.encode_documents([x["text"] for x in docs]))
    q = np.asarray(model.encode_queries([x["text"] for x in queries]))
    if dim is not None:
        d, q = d[:, :dim], q[:, :dim]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ d.T
    ids = [x["_id"] for x in docs]
    for i in range(2):
        scores[i, ids.index(f"b{i}")] = -np.inf
    return [int((scores[i] > scores[i, ids.index(f"a{i}")]).sum()) + 1 for i in range(len(q))]


def test_in_batch_loss_goes_down_and_the_log_is_complete(trained: Path) -> None:
    lines = [json.loads(x) for x in (trained / "training_log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert len(steps) >= 8 and all(x["pairs_per_s"] > 0 and x["lr"] >= 0 for x in steps)
    first = np.mean([x["loss"] for x in steps[:3]])
    last = np.mean([x["loss"] for x in steps[-3:]])
    assert last < 0.5 * first, (first, last)
    args = json.loads((trained / "training_args.json").read_text())
    assert args["trainer"] == "embedder" and args["loss"] == "mnrl" and args["data"] == "beir"
    assert args["out"] == str(trained) and args["max_seq_length"] == 32 and args["lr"] == 3e-3
    assert args["result"]["steps"] == len(steps) and args["result"]["out"] == str(trained)


def test_fine_tuned_model_ranks_the_answer_first(setup: tuple[Path, Path], trained: Path) -> None:
    data, base = setup
    before = ranks(Encoder(base, backend="torch"), data)
    after = ranks(Encoder(trained, backend="torch"), data)
    assert np.mean(before) > 3, before  # the random base ranks answers low
    assert sum(r == 1 for r in after) >= len(after) - 1, after


def test_saved_folder_loads_in_sentence_transformers_and_encoder(trained: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["falcon and copper", "a study of the old town", "glacier"]
    reference = SentenceTransformer(str(trained), device="cpu").encode(texts)
    for quantize in (None, "int8"):
        encoder = Encoder(trained, quantize=quantize, threads=1)
        assert encoder.backend_name == "onnx" and encoder.max_length == 32
        ours = encoder.encode(texts)
        cos = np.sum(ours * reference, axis=1) / np.linalg.norm(reference, axis=1)
        assert cos.min() >= (0.9999 if quantize is None else 0.9), cos


def test_a_base_with_few_positions_exports_int8(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """The int8 guard's probes are cut at the model's own length (64 here), not at a fixed
    256 that runs past the position embeddings of a short model."""
    data, _ = setup
    texts = [json.loads(x)["text"] for x in (data / "corpus.jsonl").read_text().splitlines()]
    base = build_tiny_bert(tmp_path / "base", texts + WORDS, positions=64)
    out = tmp_path / "model"
    train_embedder(data, out=out, base=str(base), **{**FAST, "epochs": 1, "max_seq_length": None})
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    long = " ".join(WORDS * 8)  # 160 words: cut at 64 tokens
    reference = Encoder(out, threads=1).encode([long, "falcon and copper"])
    int8 = Encoder(out, quantize="int8", threads=1).encode([long, "falcon and copper"])
    assert np.sum(int8 * reference, axis=1).min() >= 0.9


def test_mined_negatives_never_hold_judged_positives(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    data, base = setup
    cfg = EmbedderConfig(dataset_dir=data, out=tmp_path / "x", negatives_per_query=4,
                         miner=HashEncoder(64), dev_fraction=0.0)  # fmt: skip
    loaded = load_embedder_data(cfg, tmp_path)
    judged = {f"{WORDS[i]} and {WORDS[(i + 7) % 20]}": set() for i in range(12)}
    for line in (data / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        qid, doc, _ = line.split("\t")
        judged[next(q for q in judged if q.startswith(WORDS[int(qid[1:])] + " "))].add(doc)
    docs = {json.loads(x)["_id"]: json.loads(x)["text"]
            for x in (data / "corpus.jsonl").read_text().splitlines()}  # fmt: skip
    assert len(loaded.groups) == 14 and all(g.negatives for g in loaded.groups)
    for group in loaded.groups:
        positives = {docs[d] for d in judged[group.query]}
        assert not positives & set(group.negatives), group.query
    for batch in contrastive_batches(loaded.groups, 6, random.Random(0)):
        assert len({g.query for g in batch}) == len(batch)  # no in-batch false negative


def test_matryoshka_model_truncates_better(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, base = setup
    # 12 queries make one seed's MRR@4-dims noisy (gains of 0.03 to 0.21 over seeds 0-3),
    # so the claim is tested on the mean over two seeds
    gains = []
    for seed in (0, 1):
        options = {**FAST, "epochs": 6, "negatives_per_query": 1, "seed": seed}
        plain = train_embedder(data, out=tmp_path / f"plain{seed}", base=str(base), **options)
        nested = train_embedder(data, out=tmp_path / f"mrl{seed}", base=str(base),
                                matryoshka_dims="8,4", **options)  # fmt: skip
        assert plain.matryoshka_dims == () and nested.matryoshka_dims == (32, 8, 4)
        plain_mrr = np.mean([1 / r for r in ranks(Encoder(plain.out, backend="torch"), data, 4)])
        encoder = Encoder(nested.out, backend="torch")
        assert encoder.matryoshka_dims == (32, 8, 4)
        gains.append(np.mean([1 / r for r in ranks(encoder, data, 4)]) - plain_mrr)
    assert np.mean(gains) > 0.05, gains
    spec = folder_spec(nested.out, "tiny-mrl")
    assert spec.matryoshka_dims == (32, 8, 4) and spec.dim == 32 and spec.max_length == 32
    assert spec.bundled_path() == nested.out.resolve()


def test_matryoshka_weights_reach_the_loss(setup: tuple[Path, Path]) -> None:
    from sentence_transformers import SentenceTransformer

    from embedstack.train.embedder_model import build_loss

    model = SentenceTransformer(str(setup[1]), device="cpu")
    cfg = EmbedderConfig(
        dataset_dir="d", out="o", matryoshka_dims="4,8", matryoshka_weights="1,2,4"
    )
    loss = build_loss(model, "mnrl", cfg, 32)
    assert list(loss.matryoshka_dims) == [32, 8, 4]
    assert list(loss.matryoshka_weights) == [1.0, 2.0, 4.0]
    equal = build_loss(
        model, "mnrl", EmbedderConfig(dataset_dir="d", out="o", matryoshka_dims="8"), 32
    )
    assert list(equal.matryoshka_weights) == [1, 1]


def test_same_seed_same_model(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, base = setup
    options = {**FAST, "epochs": 2}
    vectors = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        result = train_embedder(data, out=tmp_path / name, base=str(base), seed=seed, **options)
        vectors.append(Encoder(result.out, backend="torch").encode(["falcon meadow", "quartz"]))
    assert np.array_equal(vectors[0], vectors[1])
    assert not np.allclose(vectors[0], vectors[2])


def test_dev_split_early_stopping_and_log(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, base = setup
    result = train_embedder(data, out=tmp_path / "m", base=str(base),
                            **{**FAST, "dev_fraction": 0.25, "epochs": 4})  # fmt: skip
    args = json.loads((result.out / "training_args.json").read_text())
    assert args["dev"] == 3 and args["groups"] < 14  # dev queries left training
    lines = (result.out / "training_log.jsonl").read_text().splitlines()
    dev = [x["dev"] for x in map(json.loads, lines) if "dev" in x]
    assert 2 <= len(dev) <= 5 and {"ndcg@10", "mrr@10"} <= set(dev[0])
    assert result.dev_before == dev[0] and result.dev_best["ndcg@10"] == max(
        d["ndcg@10"] for d in dev
    )


def test_matryoshka_dev_logs_each_truncation(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, base = setup
    result = train_embedder(data, out=tmp_path / "m", base=str(base), matryoshka_dims="8,4",
                            **{**FAST, "dev_fraction": 0.25, "epochs": 4})  # fmt: skip
    lines = (result.out / "training_log.jsonl").read_text().splitlines()
    dev = [x["dev"] for x in map(json.loads, lines) if "dev" in x]
    assert len(dev) >= 2
    for d in dev:  # the full dimension's metric first (it selects), then the truncations
        assert list(d)[0] == "ndcg@10" and {"ndcg@10@8", "ndcg@10@4"} <= set(d)
        mean = (d["ndcg@10"] + d["ndcg@10@8"] + d["ndcg@10@4"]) / 3
        assert d["matryoshka_ndcg@10"] == pytest.approx(mean, abs=2e-6)
    assert result.dev_best["ndcg@10"] == max(d["ndcg@10"] for d in dev)
    # a truncation to the full size is the full size (the re-normalization is a no-op)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(result.out), device="cpu")
    loaded = load_embedder_data(EmbedderConfig(dataset_dir=data, out=tmp_path / "x",
                                               dev_fraction=0.25, miner=HashEncoder(64)),
                                tmp_path)  # fmt: skip
    scores = dev_scores(model, loaded.dev, Prefixes("", "", ""), (32, 8))
    assert scores["ndcg@10@32"] == scores["ndcg@10"]


def test_pairs_file_with_and_without_negatives(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, base = setup
    rows = [{"query": f"{w} question", "positive": f"{w} answer text", "negative": "unrelated"}
            for w in WORDS[:8]]  # fmt: skip
    given = tmp_path / "given.jsonl"
    given.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train_embedder(given, out=tmp_path / "g", base=str(base), **{**FAST, "epochs": 2})
    assert result.groups == 8 and result.pairs == 2 * 8 * 2
    mined = tmp_path / "mined.jsonl"
    mined.write_text("".join(json.dumps({"query": r["query"], "positive": r["positive"]}) + "\n"
                             for r in rows))  # fmt: skip
    result = train_embedder(mined, out=tmp_path / "m", base=str(base), **{**FAST, "epochs": 1})
    negatives = (result.out / "hard_negatives.jsonl").read_text().splitlines()
    assert len(negatives) == 8 and result.groups == 8


def test_scored_pairs_train_with_cosent(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, base = setup
    rows = [{"sentence1": f"{a} {b}", "sentence2": f"{b} {a}" if s else f"{c} {d}", "score": s}
            for (a, b, c, d), s in zip(zip(WORDS, WORDS[1:], WORDS[2:], WORDS[3:], strict=False),
                                       [1.0, 0.0] * 8, strict=False)]  # fmt: skip
    path = tmp_path / "sts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train_embedder(path, out=tmp_path / "c", base=str(base),
                            **{**FAST, "dev_fraction": 0.25})  # fmt: skip
    assert result.loss == "cosent" and result.last_loss < result.first_loss
    assert set(result.dev_before) == {"spearman"}


def test_unsupervised_pairs_and_teacher_distillation(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    data, base = setup
    docs = ["One two three. Four five six seven. Eight nine.", " ".join(FILLER), "Too short."]
    ict = corpus_pairs(docs, "ict", random.Random(0), keep_query=0.0)
    assert [i for i, _, _ in ict] == [0] and ict[0][1] not in ict[0][2]
    crop = corpus_pairs(docs, "crop", random.Random(0))
    assert [i for i, _, _ in crop] == [0, 1]
    for _, query, positive in crop:
        assert 4 <= len(query.split()) <= len(docs[1].split()) // 2 + 1 and positive.strip()
    texts = [json.loads(x)["text"] for x in (data / "corpus.jsonl").read_text().splitlines()]
    teacher = build_tiny_classifier(tmp_path / "teacher", texts + WORDS)  # a random cross-encoder
    result = train_embedder(data, out=tmp_path / "gpl", base=str(base), unsupervised="crop",
                            teacher=str(teacher), **{**FAST, "epochs": 1})  # fmt: skip
    assert result.loss == "margin-mse" and result.steps > 0
    args = json.loads((result.out / "training_args.json").read_text())
    assert args["data"] == "unsupervised" and args["teacher_seconds"] >= 0
    assert np.isfinite(result.last_loss)


def test_contrastive_batches_hold_no_duplicates() -> None:
    groups = [Group(f"q{i % 5}", f"d{i % 7}", ()) for i in range(35)]
    batches = contrastive_batches(groups, 4, random.Random(1))
    assert sorted(id(g) for b in batches for g in b) == sorted(id(g) for g in groups)
    for batch in batches:
        assert len({g.query for g in batch}) == len({g.positive for g in batch}) == len(batch)
        assert len(batch) <= 4
