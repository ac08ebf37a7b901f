"""ColBERT training on the tiny synthetic BEIR folder with a tiny random BERT (tier 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from embedstack import HashEncoder  # noqa: E402
from embedstack.encoders.colbert import (  # noqa: E402
    ColbertReranker,
    LateInteractionEncoder,
    read_linear_head,
)
from embedstack.encoders.colbert_format import ColbertInputs  # noqa: E402
from embedstack.errors import InvalidInput  # noqa: E402
from embedstack.train import ColbertConfig, train_colbert  # noqa: E402
from embedstack.train import colbert as colbert_train  # noqa: E402
from embedstack.train.common import Group  # noqa: E402
from test_rerank import build_tiny_classifier  # noqa: E402
from test_splade_helpers import build_tiny_bert  # noqa: E402
from test_train import make_dataset  # noqa: E402

# the tiny base: hidden 32, 256 positions. The train queries are 22 to 68 tokens long with
# the marker, the documents 35 to 83: some queries get [MASK] padding, others are cut.
DIM, QUERY_MAXLEN, DOC_MAXLEN = 16, 40, 64
FAST: dict[str, Any] = {"threads": 1, "show_progress": False}


class Trained(NamedTuple):
    data: Path
    base: Path
    out: Path
    fed: list[ColbertInputs]  # what training passed to the model, step by step


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("colbert-train")
    data = make_dataset(root / "data")
    base = build_tiny_bert(root / "base")
    fed: list[ColbertInputs] = []
    original = colbert_train.token_vectors

    def recording(torch: Any, bert: Any, linear: Any, inputs: ColbertInputs) -> Any:
        fed.append(inputs)
        return original(torch, bert, linear, inputs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(colbert_train, "token_vectors", recording)
        train_colbert(data, out=root / "out", base=base, miner=HashEncoder(64), dim=DIM,
                      query_maxlen=QUERY_MAXLEN, doc_maxlen=DOC_MAXLEN, epochs=30,
                      negatives_per_query=3, batch_size=5, lr=3e-3, log_every=3,
                      **FAST)  # fmt: skip
    return Trained(data, base, root / "out", fed)


def _texts(data: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """Train queries by id, corpus ids and corpus texts (title + text, as BEIR loading)."""
    rows = [json.loads(x) for x in (data / "corpus.jsonl").read_text().splitlines()]
    queries = {json.loads(x)["_id"]: json.loads(x)["text"]
               for x in (data / "queries.jsonl").read_text().splitlines()}  # fmt: skip
    return queries, [r["_id"] for r in rows], [(r["title"] + " " + r["text"]).strip() for r in rows]


def _hits(model: Path, data: Path) -> int:
    """Train queries whose judged positive the model ranks first among all 20 documents."""
    queries, ids, texts = _texts(data)
    rr = ColbertReranker(model, threads=1)
    return sum(ids[rr.rerank(queries[f"q{i}"], texts, top_n=1)[0][0]] == f"pos{i}"
               for i in range(5))  # fmt: skip


def test_folder_loads_with_the_trained_head_and_lengths(trained: Trained) -> None:
    out = trained.out
    for name in ("config.json", "model.safetensors", "colbert_linear.safetensors",
                 "tokenizer.json", "artifact.metadata", "training_args.json",
                 "training_log.jsonl", "hard_negatives.jsonl"):  # fmt: skip
        assert (out / name).is_file(), name
    enc = LateInteractionEncoder(out, threads=1)  # no options: everything from the folder
    assert enc.head is not None and enc.head.shape == (DIM, 32) and enc.dim == DIM
    assert (enc.query_maxlen, enc.doc_maxlen) == (QUERY_MAXLEN, DOC_MAXLEN)  # not 32 / 180
    assert enc.query_augmentation
    q = enc.encode_queries(["cats?"])
    assert q.dim == DIM and q.lengths.tolist() == [QUERY_MAXLEN]
    np.testing.assert_allclose(np.linalg.norm(q.vectors, axis=1), 1, atol=1e-5)
    args = json.loads((out / "training_args.json").read_text())
    assert args["split"] == "train" and args["groups"] == 5 and args["dim"] == DIM
    assert args["result"]["steps"] == 30 and args["result"]["pairs"] == 30 * 5 * (1 + 3)
    # the head file is part of the model's identity
    other = out.parent / "other-head"
    shutil.copytree(out, other)
    head = read_linear_head(other, 32)
    assert head is not None
    from safetensors.numpy import save_file

    save_file({"linear.weight": head * 2}, str(other / "colbert_linear.safetensors"))
    assert LateInteractionEncoder(other, threads=1).model_id != enc.model_id


def test_loss_decreases_and_the_log_is_complete(trained: Trained) -> None:
    lines = [json.loads(x) for x in (trained.out / "training_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(3, 31, 3))
    assert all({"step", "loss", "lr", "pairs_per_s", "elapsed_s", "epoch"} <= set(x)
               for x in lines)  # fmt: skip
    first = np.mean([x["loss"] for x in lines[:2]])
    last = np.mean([x["loss"] for x in lines[-2:]])
    assert last < 0.5 * first, (first, last)


def test_trained_model_ranks_training_positives_first(trained: Trained, tmp_path: Path) -> None:
    assert _hits(trained.out, trained.data) >= 4
    # the same recipe without learning (lr ~ 0) does not: the ranking was learned
    untrained = tmp_path / "untrained"
    train_colbert(trained.data, out=untrained, base=trained.base, miner=None, dim=DIM,
                  query_maxlen=QUERY_MAXLEN, doc_maxlen=DOC_MAXLEN, lr=1e-12,
                  negatives_file=trained.out / "hard_negatives.jsonl", **FAST)  # fmt: skip
    assert _hits(untrained, trained.data) <= 2


def _brute_loss(
    q: np.ndarray, q_mask: np.ndarray, d: np.ndarray, d_mask: np.ndarray,
    targets: list[int], excluded: np.ndarray, temperature: float,
) -> float:  # fmt: skip
    """Khattab & Zaharia (2020) eq. 3 as loops, then softmax cross-entropy per query."""
    losses = []
    for i in range(len(q)):
        scores = []
        for j in range(len(d)):
            total = 0.0
            for a in range(q.shape[1]):
                if q_mask[i, a]:
                    total += max(float(q[i, a] @ d[j, b]) for b in range(d.shape[1])
                                 if d_mask[j, b])  # fmt: skip
            scores.append(total / temperature)
        kept = [s for j, s in enumerate(scores) if not excluded[i, j]]
        log_z = np.log(np.sum(np.exp(np.asarray(kept) - max(kept)))) + max(kept)
        losses.append(log_z - scores[targets[i]])
    return float(np.mean(losses))


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_loss_matches_the_brute_force_formula(temperature: float) -> None:
    import torch

    rng = np.random.default_rng(7)

    def unit(*shape: int) -> np.ndarray:
        x = rng.normal(size=shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    q, d = unit(3, 4, 5), unit(4, 6, 5)
    q_mask = np.ones((3, 4), dtype=bool)
    q_mask[2, 3] = False  # a query shorter than the others
    d_mask = np.ones((4, 6), dtype=bool)
    d_mask[0, 4:] = False  # padding ...
    d_mask[2, [1, 5]] = False  # ... and punctuation
    d[0, 4] = q[0, 0]  # a masked token that would win every max: it must not count
    d[2, 1] = q[1, 2]
    targets = [0, 2, 1]
    excluded = np.zeros((3, 4), dtype=bool)
    excluded[0, 3] = True  # another judged positive of query 0
    t = torch.from_numpy

    def loss(mask: np.ndarray | None) -> float:
        value = colbert_train.late_interaction_loss(
            torch, t(q), t(q_mask), t(d), t(d_mask), torch.tensor(targets),
            None if mask is None else t(mask), temperature,
        )  # fmt: skip
        return float(value)

    want = _brute_loss(q, q_mask, d, d_mask, targets, excluded, temperature)
    assert loss(excluded) == pytest.approx(want, rel=1e-5)
    none = np.zeros_like(excluded)
    assert loss(None) == pytest.approx(_brute_loss(q, q_mask, d, d_mask, targets, none,
                                                   temperature), rel=1e-5)  # fmt: skip
    assert loss(None) != pytest.approx(want, rel=1e-3)  # the exclusion matters here


def test_step_candidates_share_documents_and_mask_other_positives() -> None:
    groups = [Group("q", "A", ("B", "C")), Group("q", "D", ("C", "E")), Group("r", "B", ("A",))]
    docs, targets, excluded = colbert_train.step_candidates(groups, {"q": {"A", "D"}, "r": {"B"}})
    assert docs == ["A", "B", "C", "D", "E"] and targets == [0, 3, 1]
    assert excluded.tolist() == [
        [False, False, False, True, False],  # D is q's other positive
        [True, False, False, False, False],  # and A is, for the second group
        [False, False, False, False, False],  # B is r's target, A a plain negative
    ]


def test_training_inputs_are_the_encoders_inputs(trained: Trained) -> None:
    """Every row training fed its model is, token for token, what the trained folder's
    encoder feeds its backend for the same text, with the same vectors kept."""

    class Recorder:
        def __init__(self, model: Any) -> None:
            self.model, self.input_names = model, model.input_names
            self.batches: list[dict[str, np.ndarray]] = []

        def __call__(self, batch: dict[str, np.ndarray]) -> Any:
            self.batches.append(batch)
            return self.model(batch)

    enc = LateInteractionEncoder(trained.out, threads=1)
    recorder = Recorder(enc._model)
    enc._model = recorder
    queries, _, texts = _texts(trained.data)
    seen: dict[tuple[int, ...], tuple[tuple[int, ...], int]] = {}
    for text in [queries[f"q{i}"] for i in range(5)] + texts:
        encode = enc.encode_queries if text in queries.values() else enc.encode_documents
        kept = int(encode([text]).lengths[0])
        batch = recorder.batches[-1]
        seen[tuple(batch["input_ids"][0])] = (tuple(batch["attention_mask"][0]), kept)
    rows = 0
    assert len(trained.fed) == 2 * 30  # queries and documents, every step
    for inputs in trained.fed[:2]:
        batch, keep = inputs.pad(range(len(inputs)))
        for r in range(len(inputs)):
            n = len(inputs.ids[r])
            ids = tuple(batch["input_ids"][r, :n])
            assert ids in seen, ids
            attention, kept = seen[ids]
            assert tuple(batch["attention_mask"][r, :n]) == attention
            assert int(keep[r].sum()) == kept
            assert not batch["attention_mask"][r, n:].any() and not keep[r, n:].any()
            rows += 1
    records = [
        json.loads(x) for x in (trained.out / "hard_negatives.jsonl").read_text().splitlines()
    ]
    candidates = {r["positive_id"] for r in records} | {d for r in records for d in r["negatives"]}
    assert rows == 5 + len(candidates)  # one step: 5 queries, their distinct candidates
    queries_fed = trained.fed[0]
    assert all(len(x) == QUERY_MAXLEN for x in queries_fed.ids)  # [MASK]-augmented
    assert min(queries_fed.attend) < QUERY_MAXLEN == max(queries_fed.attend)  # both cases


def test_training_scores_are_the_inference_scores(trained: Trained) -> None:
    """The training forward pass (tokens, head, normalisation, masked MaxSim) on the saved
    weights gives ColbertReranker's scores."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(trained.out).eval()
    linear = torch.nn.Linear(32, DIM, bias=False)
    head = read_linear_head(trained.out, 32)
    assert head is not None
    linear.weight.data = torch.from_numpy(head)
    enc = LateInteractionEncoder(trained.out, threads=1)
    queries, _, texts = _texts(trained.data)
    with torch.no_grad():
        q, q_mask = colbert_train.token_vectors(
            torch, bert, linear, enc.inputs.queries([queries["q0"]])
        )
        d, d_mask = colbert_train.token_vectors(torch, bert, linear, enc.inputs.documents(texts))
        train_scores = colbert_train.maxsim_scores(torch, q, q_mask, d, d_mask)[0].numpy()
    np.testing.assert_allclose(train_scores, ColbertReranker(enc).score(queries["q0"], texts),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_shared_options_reach_the_colbert_trainer(trained: Trained, tmp_path: Path) -> None:
    """Options ColBERT shares with the reranker through TrainConfig act on it: ``layers``
    keeps the base's first layers, ``random_negatives`` adds corpus documents to every group,
    ``log_every`` sets the log's cadence; the run is recorded in training_args.json."""
    out = tmp_path / "shallow"
    config = ColbertConfig(dataset_dir=trained.data, out=out, base=trained.base, miner=None,
                           dim=DIM, query_maxlen=QUERY_MAXLEN, doc_maxlen=DOC_MAXLEN, layers=1,
                           random_negatives=2, negatives_per_query=1, log_every=1, batch_size=5,
                           negatives_file=trained.out / "hard_negatives.jsonl",
                           **FAST)  # fmt: skip
    result = train_colbert(config)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert result.pairs == 5 * (1 + 1 + 2) and result.steps == 1
    args = json.loads((out / "training_args.json").read_text())
    assert {k: args[k] for k in ("trainer", "layers", "random_negatives", "negatives_per_query")
            } == {"trainer": "colbert", "layers": 1, "random_negatives": 2,
                  "negatives_per_query": 1}  # fmt: skip
    assert len((out / "training_log.jsonl").read_text().splitlines()) == 1
    assert LateInteractionEncoder(out, threads=1).encode_queries(["cats?"]).dim == DIM
    depth = json.loads((trained.base / "config.json").read_text())["num_hidden_layers"]
    with pytest.raises(InvalidInput, match=f"only {depth} layers"):
        train_colbert(config, out=tmp_path / "deep", layers=depth + 1, miner=NoMiner())
    assert not (tmp_path / "deep").exists()


class NoMiner:
    """A miner that fails if used: validation must come before any mining."""

    name = model_id = "no-miner"
    dim = 8

    def encode(self, texts: Any) -> Any:
        raise RuntimeError("mining started")

    encode_queries = encode_documents = encode


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 1.5}, "dim"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"temperature": 0.0}, "temperature"),
        ({"warmup": 1.0}, "warmup"),
        ({"query_maxlen": 3}, "query_maxlen"),
        ({"doc_maxlen": 257}, r"doc_maxlen must be an int in \[4, 256\]"),
        ({"split": "dev"}, "no qrels for split 'dev'"),
    ],
)
def test_bad_arguments_fail_before_any_work(
    trained: Trained, tmp_path: Path, options: dict[str, Any], needle: str
) -> None:
    out = tmp_path / "m"
    with pytest.raises(InvalidInput, match=needle):
        train_colbert(trained.data, out=out, base=trained.base, miner=NoMiner(),
                      **{**FAST, **options})  # fmt: skip
    assert not out.exists()


def test_a_base_without_colbert_markers_is_refused(trained: Trained, tmp_path: Path) -> None:
    plain = build_tiny_classifier(tmp_path / "plain", ["cats purr"], bare=True)  # no [unused0]
    with pytest.raises(InvalidInput, match="unused0"):
        train_colbert(trained.data, out=tmp_path / "m", base=plain, miner=None, doc_maxlen=64,
                      **FAST)  # fmt: skip
    assert not (tmp_path / "m").exists()
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="refusing"):
        train_colbert(trained.data, out=tmp_path / "keep", base=trained.base, miner=None,
                      overwrite=True, **FAST)  # fmt: skip
    assert (tmp_path / "keep" / "notes.txt").is_file()


def test_cli_trains_colbert(
    trained: Trained, tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack.cli import run

    out = tmp_path / "cli-colbert"
    args = ["train", "colbert", str(trained.data), "--out", str(out), "--base",
            str(trained.base), "--miner", hash_model, "--negatives", "2", "--dim", "8",
            "--query-maxlen", "12", "--doc-maxlen", "32", "--batch-size", "4", "--epochs", "2",
            "--threads", "1"]  # fmt: skip
    assert run(args) == 0
    assert "trained 4 steps" in capsys.readouterr().out  # 5 groups in steps of 4, twice
    enc = LateInteractionEncoder(out, threads=1)
    assert (enc.dim, enc.query_maxlen, enc.doc_maxlen) == (8, 12, 32)
    capsys.readouterr()  # transformers' loading progress
    assert run(args) == 2  # the folder is not empty now
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--overwrite" in err and "\n" not in err
    reuse = tmp_path / "negatives.jsonl"
    shutil.copy(out / "hard_negatives.jsonl", reuse)
    again = [*args, "--overwrite", "--negatives-file", str(reuse), "--miner", "none", "--bf16"]
    assert run(again) == 0
    assert json.loads((out / "training_args.json").read_text())["bf16"] is True


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        (["--dim", "0"], 2, "dim"),
        (["--query-maxlen", "1000"], 2, "query_maxlen"),
        (["--split", "dev"], 2, "no qrels for split 'dev'"),
        (["--base", "/no/such/model"], 3, "not found"),
    ],
)
def test_cli_errors_are_one_line(
    trained: Trained,
    tmp_path: Path,
    extra: list[str],
    code: int,
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from embedstack.cli import run

    args = ["train", "colbert", str(trained.data), "--out", str(tmp_path / "m"),
            "--base", str(trained.base), "--miner", "none"]  # fmt: skip
    assert run([*args, *extra]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_a_run_that_fails_keeps_the_earlier_model(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``overwrite`` replaces an earlier model only when the new one is complete: a crash
    while saving leaves the earlier folder whole and no work folder behind."""
    import shutil

    out = tmp_path / "model"
    shutil.copytree(trained.out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(colbert_train, "_save_model", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        train_colbert(trained.data, out=out, base=trained.base, miner=None, dim=DIM,
                      query_maxlen=QUERY_MAXLEN, doc_maxlen=DOC_MAXLEN, overwrite=True,
                      negatives_file=trained.out / "hard_negatives.jsonl", **FAST)  # fmt: skip
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    monkeypatch.undo()
    result = train_colbert(trained.data, out=out, base=trained.base, miner=None, dim=DIM,
                           query_maxlen=QUERY_MAXLEN, doc_maxlen=DOC_MAXLEN, overwrite=True,
                           negatives_file=trained.out / "hard_negatives.jsonl", **FAST)  # fmt: skip
    record = json.loads((out / "training_args.json").read_text())
    assert result.out == out and record["out"] == str(out) and record["result"]["out"] == str(out)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
