"""``train embedder`` on bad input: one clear typed error, nothing written in ``--out``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from embedstack.errors import InvalidInput
from embedstack.train.embedder_config import EmbedderConfig

OK: dict[str, Any] = {"dataset_dir": "data", "out": "model"}


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lr", 0, "lr (--lr) must be a positive number, got 0"),
        ("batch_size", 1, "batch_size (--batch-size) must be an int >= 2, got 1"),
        ("negatives_per_query", -1, "negatives_per_query (--negatives) must be an int >= 0"),
        ("dev_fraction", 1.0, "dev_fraction (--dev-fraction) must be a number in [0, 1)"),
        ("max_seq_length", 4, "max_seq_length (--max-seq-length) must be an int >= 8"),
        ("matryoshka_dims", "256,x", "must be dimensions like '256,128,64'"),
        ("matryoshka_dims", "64,64", "must be distinct positive dimensions"),
        ("matryoshka_dims", "0", "must be distinct positive dimensions"),
        ("matryoshka_weights", "1,x", "must be numbers like '1,1,2,4'"),
        ("matryoshka_weights", "1,2", "needs matryoshka_dims (--matryoshka)"),
        ("unsupervised", "cloze", "unsupervised (--unsupervised) must be one of ict, crop"),
        ("loss", "triplet", "loss (--loss) must be one of auto, mnrl, margin-mse, cosent"),
        ("loss", "margin-mse", "distils a teacher"),
        ("mini_batch_size", 0, "mini_batch_size (--mini-batch-size) must be a positive int"),
        ("warmup", 1.0, "warmup (--warmup) must be a number in [0, 1)"),
        ("dev_pool", 0, "dev_pool (--dev-pool) must be an int >= 1, got 0"),
        (
            "positives_per_query",
            -1,
            "positives_per_query (--positives-per-query) must be an int >= 0, got -1",
        ),
    ],
)
def test_out_of_range_options(option: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        EmbedderConfig(**OK, **{option: value})


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("1,0,1", "must be positive finite numbers, got [1.0, 0.0, 1.0]"),
        ("1,inf", "must be positive finite numbers"),
        ("1,nan", "must be positive finite numbers"),
        ("1,1,1,1", "3 for --matryoshka 8,4, got 4"),
        ("1", "3 for --matryoshka 8,4, got 1"),
    ],
)
def test_matryoshka_weights_out_of_range(weights: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        EmbedderConfig(**OK, matryoshka_dims="8,4", matryoshka_weights=weights)
    config = EmbedderConfig(**OK, matryoshka_dims="8,4", matryoshka_weights="1,2,4")
    assert config.matryoshka_weights == (1.0, 2.0, 4.0)


def test_options_that_do_not_fit_together() -> None:
    with pytest.raises(InvalidInput, match="margin-mse, not loss='mnrl'"):
        EmbedderConfig(**OK, teacher="t", loss="mnrl")
    with pytest.raises(InvalidInput, match="needs negatives"):
        EmbedderConfig(**OK, teacher="t", negatives_per_query=0)
    with pytest.raises(InvalidInput, match="cosent needs scored pairs"):
        EmbedderConfig(**OK, unsupervised="ict", loss="cosent")
    config = EmbedderConfig(**OK)
    assert config.resolved_loss(scored=True) == "cosent" and config.resolved_loss(False) == "mnrl"
    with pytest.raises(InvalidInput, match="does not fit scored pairs"):
        EmbedderConfig(**OK, loss="mnrl").resolved_loss(scored=True)


def _train(data: Path, out: Path, **options: Any) -> None:
    pytest.importorskip("sentence_transformers")
    from embedstack import HashEncoder
    from embedstack.train import train_embedder

    train_embedder(data, out=out, miner=HashEncoder(16), sts_file=None, show_progress=False,
                   dev_fraction=0.0, **options)  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from test_train_embedder import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("base") / "bert", ["a b c"])


def _beir(root: Path) -> Path:
    root.mkdir()
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d", "text": "a b"}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "a"}) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("q\td\t1\n")
    return root


def _nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".training-" in p.name]


def test_beir_folder_without_the_split(tmp_path: Path, base: Path) -> None:
    data = _beir(tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match=r"no qrels for split 'train'; available splits: test"):
        _train(data, out, base=str(base))
    _nothing_written(tmp_path, out)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"query": "a", "positive": "b"}, {"query": "c"}], r":2: field 'positive' is missing"),
        ([{"query": "", "positive": "b"}], r":1: field 'query' is not a non-empty string"),
        (
            [
                {"query": "a", "positive": "b", "negatives": "c"},
            ],
            r":1: 'negative\(s\)' must be",
        ),
        (
            [
                {"sentence1": "a", "sentence2": "b", "score": 1},
                {"sentence1": "a", "sentence2": "b"},
            ],
            r":2: field 'score' is missing or not a number",
        ),
        ([], r"no pairs in the file"),
    ],
)
def test_pairs_file_with_missing_fields(
    tmp_path: Path, base: Path, lines: list[dict[str, Any]], message: str
) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match=message):
        _train(data, out, base=str(base))
    _nothing_written(tmp_path, out)


def test_base_that_is_not_a_bi_encoder(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from test_rerank import build_tiny_classifier

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"query": "a", "positive": "b"}) + "\n")
    cross = build_tiny_classifier(tmp_path / "cross", ["a b"])
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match="BertForSequenceClassification .*not a bi-encoder"):
        _train(data, out, base=str(cross))
    with pytest.raises(InvalidInput, match="is a sparse model"):
        _train(data, out, base="splade-tiny")
    from embedstack import HashEncoder, ModelSpec, register_model, unregister_model

    register_model(ModelSpec("hash-test", "none", 16, 64, factory=HashEncoder.from_spec))
    try:
        with pytest.raises(InvalidInput, match="not a transformer model"):
            _train(data, out, base="hash-test")
    finally:
        unregister_model("hash-test")
    (cross / "artifact.metadata").write_text("{}")
    with pytest.raises(InvalidInput, match="ColBERT"):
        _train(data, out, base=str(cross))
    _nothing_written(tmp_path, out)


def test_out_not_empty_is_left_alone(tmp_path: Path, base: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"query": "a", "positive": "b"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="exists and is not empty"):
        _train(data, out, base=str(base))
    with pytest.raises(InvalidInput, match="refusing to overwrite"):
        _train(data, out, base=str(base), overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if ".training-" in p.name]


def test_folders_of_killed_runs_are_swept(tmp_path: Path, base: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"query": "a", "positive": "b"}) + "\n")
    never = int(Path("/proc/sys/kernel/pid_max").read_text()) if Path("/proc").is_dir() else 2**22
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".out.training-{never}"  # pids stay below pid_max: no such process
        running = tmp_path / f".out.training-{alive.pid}"
        other = tmp_path / f".other.training-{never}"
        for folder in (dead, running, other):
            (folder / "sub").mkdir(parents=True)
        with pytest.raises(InvalidInput, match="exceed the model's dimension"):
            _train(data, tmp_path / "out", base=str(base), matryoshka_dims="64")
        assert not dead.exists() and running.is_dir() and other.is_dir()
    finally:
        alive.kill()
        alive.wait()


def test_a_failure_during_training_leaves_no_folder(tmp_path: Path, base: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"query": "a", "positive": "b"}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match="exceed the model's dimension 32"):
        _train(data, out, base=str(base), matryoshka_dims="64")
    with pytest.raises(InvalidInput, match="max_seq_length .* must be <= 256"):
        _train(data, out, base=str(base), max_seq_length=512)
    with pytest.raises(
        InvalidInput, match=re.escape("has 2 weights for the 3 dims trained [32, 8, 4]")
    ):
        _train(data, out, base=str(base), matryoshka_dims="8,4", matryoshka_weights="1,2")
    _nothing_written(tmp_path, out)


def test_a_bad_teacher_is_one_clear_error(tmp_path: Path, base: Path) -> None:
    pytest.importorskip("torch")
    from embedstack.errors import ModelNotFound
    from test_rerank import build_tiny_classifier

    data = _beir(tmp_path / "data")
    cross = build_tiny_classifier(tmp_path / "cross", ["a b"])
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match=f"teacher '{cross}' is not a bi-encoder"):
        _train(data, out, base=str(base), unsupervised="crop", teacher=f"{base},{cross}")
    with pytest.raises(ModelNotFound):
        _train(data, out, base=str(base), unsupervised="crop", teacher=f"{base},no-such-model")
    with pytest.raises(InvalidInput, match="names no model"):
        _train(data, out, base=str(base), unsupervised="crop", teacher=",")
    _nothing_written(tmp_path, out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epoch", "2"], "No such option: --epoch"),
        (["--matryoshka", "a,b"], "error: matryoshka_dims (--matryoshka) must be dimensions"),
        (["--lr", "-1"], "error: lr (--lr) must be a positive number, got -1.0"),
        (["--matryoshka", "8", "--matryoshka-weights", "1,1,1"], "got 3"),
        (["--unsupervised", "cloze"], "error: unsupervised (--unsupervised) must be one of ict"),
    ],
)
def test_cli_typos_give_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from embedstack.cli import run

    code = run(["train", "embedder", str(tmp_path), "--out", str(tmp_path / "m"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "m").exists()
