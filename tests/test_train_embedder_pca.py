"""``train embedder --pca-init``: the base rotated by PCA before training (tier 1, tiny BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from embedstack import Encoder  # noqa: E402
from embedstack.errors import InvalidInput  # noqa: E402
from embedstack.train import train_embedder  # noqa: E402
from test_train_embedder import FAST, WORDS, build_tiny_bert, make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A corpus of 42 documents (enough to fit the tiny model's 32 axes), one of 24 (not
    enough), and the tiny base."""
    root = tmp_path_factory.mktemp("pca")
    big = make_corpus(root / "big", n_topics=20)
    small = make_corpus(root / "small", n_topics=11)
    texts = [json.loads(x)["text"] for x in (big / "corpus.jsonl").read_text().splitlines()]
    return big, small, build_tiny_bert(root / "base", texts + WORDS)


def _modules(folder: Path) -> list[str]:
    return [m["type"].rpartition(".")[2] for m in json.loads((folder / "modules.json").read_text())]


def test_pca_init_trains_the_rotation_and_saves_a_loadable_model(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    big, _, base = setup
    options = {**FAST, "epochs": 2}
    rotated = train_embedder(big, out=tmp_path / "rot", base=str(base), pca_init=True, **options)
    plain = train_embedder(big, out=tmp_path / "plain", base=str(base), **options)
    assert _modules(rotated.out).count("Dense") == 1 and "Dense" not in _modules(plain.out)
    args = json.loads((rotated.out / "training_args.json").read_text())
    assert args["pca_init"]["texts"] == 42 and args["pca_init"]["read"] == 42
    assert not (rotated.out / ".pca-base").exists()  # the rotated copy is not shipped
    texts = ["falcon and copper", "quartz thunder walnut"]
    ours = Encoder(rotated.out, backend="onnx").encode(texts)
    theirs = SentenceTransformer(str(rotated.out), device="cpu").encode(texts)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999
    # the rotation layer is trained with the rest: it is no longer the fitted one
    from safetensors.numpy import load_file

    dense = next(p for p in rotated.out.iterdir() if p.name.endswith("_Dense"))
    weight = next(iter(load_file(dense / "model.safetensors").values()))
    assert weight.shape == (32, 32) and not np.allclose(weight @ weight.T, np.eye(32), atol=1e-6)


def test_matryoshka_rotates_by_default_unless_too_few_texts(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    big, small, base = setup
    options = {**FAST, "epochs": 1, "matryoshka_dims": "8"}
    on = train_embedder(big, out=tmp_path / "on", base=str(base), **options)
    assert "Dense" in _modules(on.out)
    off = train_embedder(big, out=tmp_path / "off", base=str(base), pca_init=False, **options)
    assert "Dense" not in _modules(off.out)
    few = train_embedder(small, out=tmp_path / "few", base=str(base), **options)
    args = json.loads((few.out / "training_args.json").read_text())
    assert "Dense" not in _modules(few.out)
    assert args["pca_init"] == "skipped: 24 texts < 32 dims"


def test_explicit_pca_init_with_too_few_texts_fails_cleanly(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, small, base = setup
    with pytest.raises(InvalidInput, match="at least 32 distinct texts"):
        train_embedder(small, out=tmp_path / "m", base=str(base), pca_init=True, **FAST)
    assert not (tmp_path / "m").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
