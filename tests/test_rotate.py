"""A PCA rotation baked into a model (``embedstack models rotate``, tier 1, tiny random BERTs).

Oracles: sentence-transformers loading the written folder, for the vectors; the source
model's vectors times the rotation computed here with numpy, for what the rotated model
gives; the source's own cosines, for "nothing changes at full size"; variances computed from
the rotated vectors, for "the first axes carry the most".
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")

from embedstack import Encoder, ModelSpec, register_model, unregister_model  # noqa: E402
from embedstack.cli import run  # noqa: E402
from embedstack.encoders.loading import load_model_config  # noqa: E402
from embedstack.encoders.rotate import fit_rotation, rotate_model, sample_texts  # noqa: E402
from embedstack.encoders.static import write_static_folder  # noqa: E402
from embedstack.errors import InvalidInput  # noqa: E402
from test_dense_module import dense, save_st  # noqa: E402
from test_splade_helpers import build_tiny_mlm  # noqa: E402
from test_train_embedder import FILLER, WORDS, build_tiny_bert  # noqa: E402

DIM = 32  # the tiny BERT's hidden size
VOCAB = WORDS + FILLER


def corpus(n: int = 120, seed: int = 0) -> tuple[list[str], list[str]]:
    """Documents of 12 random words, and per document a query of its first 4 words."""
    rng = random.Random(seed)
    docs = [" ".join(rng.sample(VOCAB, 12)) for _ in range(n)]
    return docs, [" ".join(d.split()[:4]) for d in docs]


DOCS, QUERIES = corpus()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Hugging Face folder (no modules.json): mean pooling, L2, by default."""
    return build_tiny_bert(tmp_path_factory.mktemp("base") / "bert", DOCS + VOCAB)


@pytest.fixture(scope="module")
def st_base(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers folder with a Dense (tanh, 32 -> 24) before Normalize."""
    folder = tmp_path_factory.mktemp("st") / "with-dense"
    return save_st(base, folder, [dense(DIM, 24, "Tanh")])


@pytest.fixture(scope="module")
def rotated(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rotated") / "model"
    rotate_model(base, out, DOCS, sample=100, seed=0)
    return out


def rotation_of(folder: Path) -> np.ndarray:
    layer = load_model_config(folder).dense[-1]
    return layer.load().weight


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mrr(queries: np.ndarray, docs: np.ndarray, k: int) -> float:
    """Mean reciprocal rank of document i for query i on the first ``k`` dims (ties count
    against: only strictly better documents rank above)."""
    scores = unit(queries[:, :k]) @ unit(docs[:, :k]).T
    ranks = (scores > np.diag(scores)[:, None]).sum(axis=1) + 1
    return float((1.0 / ranks).mean())


@pytest.mark.parametrize("which", ["plain", "st-with-dense"])
def test_rotated_folder_loads_in_sentence_transformers_and_encoder(
    which: str, base: Path, st_base: Path, rotated: Path, tmp_path: Path
) -> None:
    source = base if which == "plain" else st_base
    out = rotated if which == "plain" else tmp_path / "rotated"
    if which != "plain":
        rotate_model(source, out, DOCS, sample=100, seed=0)
    modules = json.loads((out / "modules.json").read_text())
    kinds = [m["type"].rpartition(".")[2] for m in modules]
    assert kinds == (["Transformer", "Pooling", "Dense", "Normalize"] if which == "plain"
                     else ["Transformer", "Pooling", "Dense", "Dense", "Normalize"])  # fmt: skip
    reference = st.SentenceTransformer(str(out), device="cpu").encode(DOCS[:10])
    for backend in ("onnx", "torch"):
        ours = Encoder(out, backend=backend).encode_documents(DOCS[:10])
        cos = np.einsum("ij,ij->i", unit(ours), unit(np.asarray(reference)))
        assert cos.min() >= 0.9999, backend
    # the rotated model is the source times R^T: the oracle computed here
    expected = Encoder(source).encode_documents(DOCS[:10]) @ rotation_of(out).T
    np.testing.assert_allclose(Encoder(out).encode_documents(DOCS[:10]), expected, atol=1e-5)


def test_full_dim_cosines_are_unchanged(base: Path, rotated: Path) -> None:
    texts = DOCS[:30] + QUERIES[:10]
    before = Encoder(base).encode_documents(texts)
    after = Encoder(rotated).encode_documents(texts)
    assert np.abs(before @ before.T - after @ after.T).max() <= 1e-5
    assert not np.allclose(before, after, atol=1e-3)  # it did rotate


def test_rotation_is_orthogonal_and_orders_axes_by_variance(base: Path, rotated: Path) -> None:
    r = rotation_of(rotated).astype(np.float64)
    assert r.shape == (DIM, DIM)
    np.testing.assert_allclose(r @ r.T, np.eye(DIM), atol=1e-5)
    record = json.loads((rotated / "rotation.json").read_text())
    sample, _ = sample_texts(DOCS, 100, 0)
    assert record["n_texts"] == len(sample) == 100 and record["n_read"] == len(DOCS)
    vectors = Encoder(rotated).encode_documents(sample).astype(np.float64)
    variance = vectors.var(axis=0, ddof=1)
    assert np.all(np.diff(variance) <= 1e-9)  # non-increasing: any first k is the top k
    np.testing.assert_allclose(variance, record["variance"], rtol=1e-3, atol=1e-8)
    plain = Encoder(base).encode_documents(sample).astype(np.float64)
    # the axes are the covariance's eigenvectors, by decreasing eigenvalue (up to sign)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(plain, rowvar=False))
    order = np.argsort(-eigenvalues)
    np.testing.assert_allclose(variance, eigenvalues[order], rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(np.abs(r), np.abs(eigenvectors[:, order].T), atol=1e-3)
    rng = np.random.default_rng(0)
    for k in (1, 2, 4, 8, 16):
        assert variance[:k].sum() >= plain.var(axis=0, ddof=1)[:k].sum() - 1e-9
        for _ in range(5):  # any other k-dimensional orthonormal view keeps less
            q, _ = np.linalg.qr(rng.standard_normal((DIM, k)))
            assert variance[:k].sum() >= (plain @ q).var(axis=0, ddof=1).sum() - 1e-9


def test_truncated_ranking_beats_plain_truncation_and_is_deterministic(
    base: Path, tmp_path: Path
) -> None:
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((first, 3), (again, 3), (other, 4)):
        rotate_model(base, out, DOCS, sample=60, seed=seed)
    weights = [(f / "2_Dense" / "model.safetensors").read_bytes() for f in (first, again, other)]
    assert weights[0] == weights[1] and weights[0] != weights[2]
    d0, q0 = Encoder(base).encode_documents(DOCS), Encoder(base).encode_queries(QUERIES)
    d1, q1 = Encoder(first).encode_documents(DOCS), Encoder(first).encode_queries(QUERIES)
    k = 4
    assert mrr(q1, d1, k) >= mrr(q0, d0, k)
    # the oracle: the source's vectors rotated with numpy rank exactly as the folder does
    r = rotation_of(first)
    assert mrr(q0 @ r.T, d0 @ r.T, k) == pytest.approx(mrr(q1, d1, k), abs=1e-9)
    assert mrr(q1, d1, DIM) == pytest.approx(mrr(q0, d0, DIM), abs=1e-9)


def test_registry_settings_travel_into_the_folder(base: Path, tmp_path: Path) -> None:
    spec = ModelSpec("tiny-rotate-src", str(base.resolve()), DIM, 48, pooling="cls",
                     query_prefix="q: ", document_prefix="d: ", symmetric_prefix="s: ",
                     matryoshka_dims=(8, 16), bundled=None)  # fmt: skip
    register_model(spec, overwrite=True)
    try:
        out = rotate_model("tiny-rotate-src", tmp_path / "r", DOCS, sample=64, seed=1).out
        source = Encoder("tiny-rotate-src")
        expected = source.encode_documents(DOCS[:8]) @ rotation_of(out).T
        queries = source.encode_queries(QUERIES[:8]) @ rotation_of(out).T
    finally:
        unregister_model("tiny-rotate-src")
    config = load_model_config(out)
    # the first dims are principal axes now, not the trained Matryoshka prefix
    assert (config.pooling, config.max_length, config.matryoshka_dims) == ("cls", 48, ())
    assert (config.query_prefix, config.document_prefix) == ("q: ", "d: ")
    assert config.symmetric_prefix == "s: "  # e5's "query: " for STS survives the folder
    assert json.loads((out / "rotation.json").read_text())["source_matryoshka_dims"] == [8, 16]
    rotated = Encoder(out)
    np.testing.assert_allclose(rotated.encode_documents(DOCS[:8]), expected, atol=1e-5)
    np.testing.assert_allclose(rotated.encode_queries(QUERIES[:8]), queries, atol=1e-5)
    assert json.loads((out / "rotation.json").read_text())["source"] == "tiny-rotate-src"


def test_readme_records_the_rotation(base: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    import shutil

    shutil.copytree(base, source)
    (source / "README.md").write_text("# tiny\n")
    out = rotate_model(source, tmp_path / "out", DOCS, sample=40, seed=2).out
    readme = (out / "README.md").read_text()
    assert readme.startswith("# tiny\n") and "seed 2" in readme and "40 document" in readme


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_bad_input_raises_typed_errors_and_writes_nothing(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match=f"at least {DIM} distinct texts, got 20"):
        rotate_model(base, out, DOCS[:20], sample=100)
    with pytest.raises(InvalidInput, match=f"at least {DIM} distinct texts, got 1 "):
        rotate_model(base, out, ["same text"] * 50, sample=100)
    with pytest.raises(InvalidInput, match=f"needs at least {DIM} texts"):
        rotate_model(base, out, DOCS, sample=DIM - 1)
    assert_nothing_written(out)
    mlm = build_tiny_mlm(tmp_path / "splade")
    with pytest.raises(InvalidInput, match="SPLADE"):
        rotate_model(mlm, out, DOCS)
    with pytest.raises(InvalidInput, match="SPLADE"):
        rotate_model("splade-tiny", out, DOCS)
    static = tmp_path / "static"
    tokenizer = (base / "tokenizer.json").read_text()
    vocab = len(json.loads(tokenizer)["model"]["vocab"])
    write_static_folder(static, np.ones((vocab, 8), np.float32), tokenizer, max_length=16,
                        normalize=True, source="test")  # fmt: skip
    with pytest.raises(InvalidInput, match="static"):
        rotate_model(static, out, DOCS)
    assert_nothing_written(out)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        rotate_model(base, out, DOCS, sample=40)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failure_while_writing_leaves_nothing(base: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    import shutil

    shutil.copytree(base, source)
    (source / "notes.txt").symlink_to(tmp_path / "missing")  # copying it fails
    out = tmp_path / "empty"
    out.mkdir()
    with pytest.raises(OSError):
        rotate_model(source, out, DOCS, sample=40)
    assert_nothing_written(out)


def test_fit_rotation_fixes_signs_and_refuses_too_few_rows() -> None:
    x = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    r1, v1 = fit_rotation(x)
    r2, _ = fit_rotation(-x)  # same axes, opposite data: the signs are fixed the same way
    np.testing.assert_allclose(r1, r2, atol=1e-5)
    lead = np.abs(r1).argmax(axis=1)
    assert (r1[np.arange(6), lead] > 0).all() and np.all(np.diff(v1) <= 0)
    with pytest.raises(InvalidInput, match="at least 6"):
        fit_rotation(x[:5])


@pytest.mark.parametrize("form", ["beir", "jsonl", "folder"])
def test_cli_reads_each_corpus_form(
    form: str, base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(DOCS[:50])]
    if form == "beir":
        (data / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (data / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "x"}) + "\n")
        corpus_path = data
    elif form == "jsonl":
        corpus_path = data / "docs.jsonl"
        corpus_path.write_text("".join(json.dumps({"id": r["_id"], "text": r["text"]}) + "\n"
                                       for r in rows))  # fmt: skip
    else:
        for r in rows:
            (data / f"{r['_id']}.txt").write_text(r["text"])
        corpus_path = data
    out = tmp_path / "out"
    code = run(["models", "rotate", str(base), "--out", str(out), "--corpus", str(corpus_path),
                "--sample", "40", "--seed", "5"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == str(out)
    record = json.loads((out / "rotation.json").read_text())
    assert (record["n_texts"], record["n_read"], record["seed"]) == (40, 50, 5)


def test_cli_refuses_bad_input_with_one_line(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus_path = tmp_path / "docs.jsonl"
    corpus_path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n"
                                   for i, t in enumerate(DOCS[:10])))  # fmt: skip
    out = tmp_path / "out"
    code = run(["models", "rotate", str(base), "--out", str(out), "--corpus", str(corpus_path)])
    assert code == 2
    assert f"at least {DIM} distinct texts" in capsys.readouterr().err
    assert_nothing_written(out)
