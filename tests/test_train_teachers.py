"""Margin-MSE teachers made of bi-encoders (``train embedder --teacher A,B``), tier 1."""

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
from embedstack.train.teachers import DenseTeacher, load_teacher  # noqa: E402
from test_rerank import build_tiny_classifier  # noqa: E402
from test_train_embedder import FAST, WORDS, build_tiny_bert, make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], Path, Path]:
    """A BEIR folder, its texts, and two tiny random bi-encoders with different weights."""
    import torch

    root = tmp_path_factory.mktemp("teachers")
    data = make_corpus(root / "data")
    texts = [json.loads(x)["text"] for x in (data / "corpus.jsonl").read_text().splitlines()]
    first = build_tiny_bert(root / "a", texts + WORDS)
    second = build_tiny_bert(root / "b", texts + WORDS)
    from transformers import BertModel

    model = BertModel.from_pretrained(second)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(second)
    return data, texts, first, second


def oracle(members: list[Path], student: Path, corpus: list[str], query: str,
           docs: list[str]) -> np.ndarray:  # fmt: skip
    """The brief's definition, the slow way: each member's cosines over the whole corpus,
    z-scored per query, averaged, and put on the student's scale (mean and spread of its
    cosines over the corpus)."""

    encoders = {m: Encoder(str(m), show_progress=False) for m in {*members, student}}

    def cosines(model: Path, texts: list[str]) -> np.ndarray:
        encoder = encoders[model]
        return np.asarray(encoder.encode_documents(texts), dtype=np.float64) @ np.asarray(
            encoder.encode_queries([query]), dtype=np.float64)[0]  # fmt: skip

    z = []
    for model in members:
        over = cosines(model, corpus)
        z.append((cosines(model, docs) - over.mean()) / over.std(ddof=1))
    over = cosines(student, corpus)
    return over.mean() + over.std(ddof=1) * np.mean(z, axis=0)


def test_the_student_alone_teaches_its_own_cosines(models: tuple) -> None:
    _, texts, first, _ = models
    teacher = DenseTeacher([str(first)], texts, student=str(first))
    encoder = Encoder(str(first), show_progress=False)
    docs = texts[:5]
    expected = np.asarray(encoder.encode_documents(docs)) @ np.asarray(
        encoder.encode_queries([texts[7]]))[0]  # fmt: skip
    np.testing.assert_allclose(teacher.score(texts[7], docs), expected, atol=1e-5)
    # on the loss's scale: Margin-MSE compares the teacher with ``scale`` x the student
    scaled = DenseTeacher([str(first)], texts, student=str(first), scale=20)
    np.testing.assert_allclose(scaled.score(texts[7], docs), 20 * expected, atol=2e-4)


def test_ensemble_scores_match_the_z_score_oracle(models: tuple) -> None:
    _, texts, first, second = models
    teacher = DenseTeacher([str(first), str(second)], texts, student=str(first))
    query = f"{WORDS[3]} and {WORDS[10]}"
    docs = [*texts[:6], "a text outside the corpus, encoded when met"]
    teacher.warm([query, "another query"], docs)  # batched up front, as training does
    got = teacher.score(query, docs)
    np.testing.assert_allclose(got, oracle([first, second], first, texts, query, docs),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    single = DenseTeacher([str(second)], texts, student=str(first)).score(query, docs)
    assert not np.allclose(got, single, atol=1e-3)  # the second member is not ignored


def test_load_teacher_tells_bi_encoders_from_cross_encoders(models: tuple, tmp_path: Path) -> None:
    _, texts, first, second = models
    cross = build_tiny_classifier(tmp_path / "cross", texts + WORDS)
    corpus = lambda: texts  # noqa: E731
    one = load_teacher(str(first), student=str(first), corpus=corpus)
    two = load_teacher(f"{first},{second}", student=str(first), corpus=corpus)
    assert isinstance(one, DenseTeacher) and len(one.members) == 1
    assert isinstance(two, DenseTeacher) and len(two.members) == 2
    assert not isinstance(load_teacher(str(cross), student=str(first), corpus=corpus),
                          DenseTeacher)  # fmt: skip
    with pytest.raises(InvalidInput, match="not a bi-encoder"):
        load_teacher(f"{first},{cross}", student=str(first), corpus=corpus)
    with pytest.raises(InvalidInput, match="names no model"):
        load_teacher(" , ", student=str(first), corpus=corpus)


def test_distilling_an_ensemble_scores_only_the_groups_trained_on(
    models: tuple, tmp_path: Path
) -> None:
    data, _, first, second = models
    result = train_embedder(data, out=tmp_path / "gpl", base=str(first), unsupervised="crop",
                            teacher=f"{first},{second}", negatives_per_query=1, max_pairs=8,
                            **{**FAST, "epochs": 1})  # fmt: skip
    args = json.loads((result.out / "training_args.json").read_text())
    assert result.loss == "margin-mse" and np.isfinite(result.last_loss)
    assert args["teacher"].startswith("dense-ensemble:")
    trained = sum(epoch["groups"] for epoch in args["batches"])
    assert 0 < args["teacher_groups"] == trained < args["groups"]


def test_a_teacher_equal_to_the_student_starts_at_zero_loss(models: tuple, tmp_path: Path) -> None:
    """The teacher is put on the loss's scale (``scale`` x the student's cosines): distilling
    the base into itself starts with nothing to learn."""
    data, _, first, _ = models
    result = train_embedder(data, out=tmp_path / "self", base=str(first), unsupervised="crop",
                            teacher=str(first), negatives_per_query=1, max_pairs=8,
                            **{**FAST, "epochs": 1})  # fmt: skip
    assert result.first_loss < 1e-3
