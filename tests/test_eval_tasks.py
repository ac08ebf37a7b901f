"""MTEB task types on local files (``embedstack.eval.tasks``, ``embedstack eval --task``).

The encoder here reads its vector from the text (``"3 4"`` → ``[3, 4, 0]``), so every score is
computed by hand from the vectors the test writes; expected values are formulas.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack.cli import run
from embedstack.errors import DimensionMismatch, InvalidInput, MissingDependency
from embedstack.eval.tasks import TASKS, evaluate_task
from embedstack.eval.tasks.classification import classify, undersample
from embedstack.eval.tasks.clustering import cluster
from embedstack.eval.tasks.pair_classification import threshold_scores
from embedstack.eval.tasks.reranking import rank_metrics

DIM = 3


class VectorEncoder:
    """``"x y [z] [# tag]"`` → ``[x, y, z]`` (not normalized); ``#`` tags make texts distinct."""

    def __init__(self, name: str = "vector-3") -> None:
        self.name = name
        self.model_id = f"{name}@test"
        self.dim = DIM
        self.calls: list[str] = []

    @classmethod
    def from_spec(cls, spec: Any, **_: Any) -> VectorEncoder:
        return cls(spec.name)

    def _vectors(self, texts: Iterable[str]) -> np.ndarray:
        rows = []
        for text in texts:
            numbers = [float(x) for x in text.split("#")[0].split()]
            rows.append(numbers + [0.0] * (DIM - len(numbers)))
        return np.asarray(rows, dtype=np.float32)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        self.calls.append("text")
        return self._vectors(texts)

    def encode_queries(self, texts: Iterable[str]) -> np.ndarray:
        self.calls.append("query")
        return self._vectors(texts)

    def encode_documents(self, texts: Iterable[str]) -> np.ndarray:
        self.calls.append("document")
        return self._vectors(texts)


@pytest.fixture()
def vector_model() -> Iterator[str]:
    """Register :class:`VectorEncoder` for the CLI and yield its name."""
    from embedstack import ModelSpec, register_model, unregister_model

    name = "test-vector-3"
    register_model(
        ModelSpec(name, "embedstack/test-vector", DIM, 512, factory=VectorEncoder.from_spec),
        overwrite=True,
    )
    yield name
    unregister_model(name)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _entropy(*counts: int) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c)


# --- clustering -------------------------------------------------------------------------


def _separated(tag: str = "") -> list[dict[str, Any]]:
    centres = {"north": (0, 10), "east": (10, 0), "south": (0, -10)}
    return [
        {"text": f"{x + dx} {y + dy} # {tag}{label}{i}", "label": label}
        for label, (x, y) in centres.items()
        for i, (dx, dy) in enumerate([(0, 0), (0.3, 0), (0, 0.3), (-0.3, 0.1)])
    ]


def test_clustering_of_separated_points_is_perfect(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "clusters.jsonl", _separated())
    report = evaluate_task(VectorEncoder(), path, "clustering")
    assert report["main_metric"] == "v_measure" and report["main_score"] == pytest.approx(1.0)
    assert report["n_examples"] == 12 and report["n_sets"] == 1
    assert report["config"]["kmeans_batch_size"] == 500 and report["config"]["seed"] == 42


def test_clustering_v_measure_by_hand() -> None:
    # k-means finds the two blobs {0, 1, 2} and {3, 4, 5}; gold labels: a a b | b b b
    points = np.array([[0, 0], [0, 1], [1, 0], [100, 100], [100, 101], [101, 100]], np.float32)
    h_classes = _entropy(2, 4)
    homogeneity = 1 - (3 / 6 * _entropy(2, 1) + 3 / 6 * 0) / h_classes
    completeness = 1 - (2 / 6 * 0 + 4 / 6 * _entropy(1, 3)) / _entropy(3, 3)
    expected = 2 * homogeneity * completeness / (homogeneity + completeness)
    assert cluster(points, ["a", "a", "b", "b", "b", "b"]) == pytest.approx(expected)


def test_clustering_sets_are_averaged(tmp_path: Path) -> None:
    """Two sets: one perfect, one where every blob mixes both labels (V-measure 0)."""
    mixed = [
        {"text": f"{x} {y} # m{i}", "label": "ab"[i % 2], "set": "mixed"}
        for i, (x, y) in enumerate([(0, 0), (0, 0.1), (50, 0), (50, 0.1)])
    ]
    rows = [{**r, "set": "clean"} for r in _separated()] + mixed
    report = evaluate_task(VectorEncoder(), _jsonl(tmp_path / "c.jsonl", rows), "clustering")
    assert report["v_measures"] == pytest.approx([1.0, 0.0], abs=1e-9)
    assert report["v_measure"] == pytest.approx(0.5) and report["n_sets"] == 2
    assert report["v_measure_std"] == pytest.approx(0.5)


def test_clustering_single_label_set_scores_one_without_encoding(tmp_path: Path) -> None:
    encoder = VectorEncoder()
    rows = [{"text": f"{i} 0", "label": "only"} for i in range(3)]
    report = evaluate_task(encoder, _jsonl(tmp_path / "c.jsonl", rows), "clustering")
    assert report["main_score"] == 1.0 and encoder.calls == []


# --- pair classification ----------------------------------------------------------------


def test_threshold_scores_by_hand() -> None:
    scores = np.array([0.9, 0.7, 0.6, 0.4, 0.2])
    labels = np.array([1, 0, 1, 1, 0])
    # cuts after the 1st..4th pair: (similar above + dissimilar below) / 5
    accuracy = max((1 + 2) / 5, (1 + 1) / 5, (2 + 1) / 5, (3 + 1) / 5)
    f1 = 2 * (3 / 4) * 1 / (3 / 4 + 1)  # best cut: after the 4th pair, P = 3/4, R = 3/3
    ap = (1 / 1 + 2 / 3 + 3 / 4) / 3
    expected = {"accuracy": accuracy, "f1": f1, "precision": 3 / 4, "recall": 1.0, "ap": ap}
    assert threshold_scores(scores, labels) == pytest.approx(expected)
    # a distance ranks the other way round: the same pairs, the same scores
    assert threshold_scores(-scores, labels, higher_is_similar=False) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_scores_match_a_plain_loop(seed: int) -> None:
    """Oracle: try every cut of the stably sorted pairs one by one (ties included)."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=30).astype(float)  # many ties
    labels = rng.integers(0, 2, size=30)
    order = sorted(range(30), key=lambda i: -scores[i])  # Python's sort is stable
    best_acc, best = 0.0, (0.0, 0.0, 0.0)
    for cut in range(1, 30):  # the first `cut` pairs called similar
        top = [labels[i] for i in order[:cut]]
        true_pos = sum(top)
        true_neg = sum(1 - labels[i] for i in order[cut:])
        best_acc = max(best_acc, (true_pos + true_neg) / 30)
        if true_pos:
            p, r = true_pos / cut, true_pos / labels.sum()
            if 2 * p * r / (p + r) > best[0]:
                best = (2 * p * r / (p + r), p, r)
    got = threshold_scores(scores, labels)
    assert got["accuracy"] == pytest.approx(best_acc)
    assert (got["f1"], got["precision"], got["recall"]) == pytest.approx(best)


def test_threshold_after_the_last_pair_is_not_tried() -> None:
    """MTEB never calls every pair similar: here that would score 2/3 and F1 0.8."""
    scores = threshold_scores(np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]))
    assert scores["accuracy"] == pytest.approx(max(0 / 3, (1 + 0) / 3))
    assert scores["f1"] == pytest.approx(2 * 0.5 * 0.5 / (0.5 + 0.5))


def test_pair_classification_by_hand(tmp_path: Path) -> None:
    rows = [
        {"sentence1": "1 0", "sentence2": "1 0 # same", "label": 1},  # cos 1, dot 1, L2 0
        {"sentence1": "1 0", "sentence2": "0 1", "label": 0},  # cos 0, dot 0, L2 √2, L1 2
        {"sentence1": "1 0", "sentence2": "4 0", "label": 1},  # cos 1, dot 4, L2 3, L1 3
        {"sentence1": "1 0", "sentence2": "0.6 0.8", "label": 0},  # cos .6, L2 .894, L1 1.2
    ]
    report = evaluate_task(
        VectorEncoder(), _jsonl(tmp_path / "p.jsonl", rows), "pair-classification"
    )
    # cosine and dot rank 1, 1, 0, 0 (labels): perfect
    for function in ("cosine", "dot"):
        assert report[f"{function}_ap"] == pytest.approx(1.0)
        assert report[f"{function}_accuracy"] == pytest.approx(1.0)
    # distances rank pair 1, 4, 2, 3: labels 1, 0, 0, 1
    for function in ("euclidean", "manhattan"):
        assert report[f"{function}_ap"] == pytest.approx((1 / 1 + 2 / 4) / 2)
        assert report[f"{function}_accuracy"] == pytest.approx((1 + 2) / 4)
        assert report[f"{function}_f1"] == pytest.approx(2 * 1 * 0.5 / (1 + 0.5))
    assert report["main_metric"] == "max_ap" and report["main_score"] == pytest.approx(1.0)
    assert report["max_f1"] == pytest.approx(1.0) and report["n_examples"] == 4


def test_pair_classification_needs_both_labels(tmp_path: Path) -> None:
    rows = [{"sentence1": "1 0", "sentence2": "1 0", "label": 1}] * 2
    with pytest.raises(InvalidInput, match="labelled 1 and pairs labelled 0"):
        evaluate_task(VectorEncoder(), _jsonl(tmp_path / "p.jsonl", rows), "pair-classification")


# --- reranking --------------------------------------------------------------------------


def test_rank_metrics_by_hand() -> None:
    # ranking: negative (.9), positive (.5), negative (.4), positive (.1)
    scores = np.array([0.5, 0.9, 0.1, 0.4])
    relevant = [True, False, True, False]
    expected = {"ap": (1 / 2 + 2 / 4) / 2, "mrr": 1 / 2}
    assert rank_metrics(scores, relevant) == pytest.approx(expected)
    assert rank_metrics(scores, relevant, k=1)["mrr"] == 0.0


def test_reranking_by_hand(tmp_path: Path) -> None:
    rows = [
        # cosines to the query: positives 0 and 1/√2, negatives .995 and -1
        {"query": "1 0", "positive": ["0 1", "1 1"], "negative": ["1 0.1", "-1 0"]},
        # two phrasings: each candidate scores its best cosine, positive 1 > negative .894
        {"query": ["1 0", "0 1 # q"], "positive": ["0 1 # p"], "negative": ["1 0.5"]},
        {"query": "1 0", "positive": ["1 0 # p"], "negative": []},  # skipped, as MTEB does
    ]
    encoder = VectorEncoder()
    report = evaluate_task(encoder, _jsonl(tmp_path / "r.jsonl", rows), "reranking")
    first_ap = (1 / 2 + 2 / 3) / 2  # relevance in rank order: 0, 1, 1, 0
    assert report["map"] == pytest.approx((first_ap + 1.0) / 2)
    assert report["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert report["n_examples"] == 2 and report["n_skipped"] == 1 and report["n_candidates"] == 6
    assert sorted(set(encoder.calls)) == ["document", "query"]  # with the model's prefixes
    cut = evaluate_task(VectorEncoder(), tmp_path / "r.jsonl", "reranking", mrr_k=1)
    assert cut["mrr@1"] == pytest.approx((0 + 1) / 2)


def test_reranking_without_any_complete_sample(tmp_path: Path) -> None:
    rows = [{"query": "1 0", "positive": ["1 0"], "negative": []}]
    with pytest.raises(InvalidInput, match="both a positive and a negative"):
        evaluate_task(VectorEncoder(), _jsonl(tmp_path / "r.jsonl", rows), "reranking")


# --- classification ---------------------------------------------------------------------


def test_undersample_follows_mteb_reshuffling() -> None:
    labels = ["a"] * 10 + ["b"] * 6 + ["c"] * 2
    draws = undersample(labels, 3, 4, seed=7)
    permutation = np.random.RandomState(7).permutation(len(labels))
    order = np.arange(len(labels))
    for draw in draws:
        order = order[permutation]  # experiment i sees the permutation applied i + 1 times
        expected, seen = [], {"a": 0, "b": 0, "c": 0}
        for i in order:
            if seen[labels[i]] < 3:
                expected.append(int(i))
                seen[labels[i]] += 1
        assert draw == expected
    assert all(len(d) == 3 + 3 + 2 for d in draws) and len({tuple(d) for d in draws}) > 1


def test_classify_by_hand() -> None:
    train = np.array([[-1, 0], [-2, 0], [1, 0], [2, 0]], np.float32)
    test = np.array([[-3, 0], [3, 0], [-3, 0.5], [4, 0]], np.float32)  # predicted a, b, a, b
    scores = classify(train, ["a", "a", "b", "b"], test, ["a", "b", "b", "b"])
    f1_a, f1_b = 2 * 0.5 * 1 / (0.5 + 1), 2 * 1 * (2 / 3) / (1 + 2 / 3)
    assert scores["accuracy"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx((f1_a + f1_b) / 2)
    assert scores["f1_weighted"] == pytest.approx((1 * f1_a + 3 * f1_b) / 4)
    assert scores["precision"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores["recall"] == pytest.approx((1 + 2 / 3) / 2)
    # AP of the predicted labels ("b" positive): P = 1 at recall 2/3, then 3/4 at recall 1
    assert scores["ap"] == pytest.approx(2 / 3 * 1 + 1 / 3 * 3 / 4)
    assert scores["converged"] == 1.0


def _classes(n: int, tag: str) -> list[dict[str, Any]]:
    centres = {"pos": (5, 5), "neg": (-5, -5), "mid": (5, -5)}
    return [
        {"text": f"{x + 0.1 * i} {y - 0.1 * i} # {tag}{i}", "label": label}
        for label, (x, y) in centres.items()
        for i in range(n)
    ]


def test_classification_of_separable_data_is_perfect(tmp_path: Path) -> None:
    _jsonl(tmp_path / "data" / "train.jsonl", _classes(12, "train"))
    _jsonl(tmp_path / "data" / "test.jsonl", _classes(5, "test"))
    report = evaluate_task(VectorEncoder(), tmp_path / "data", "classification")
    assert report["main_metric"] == "accuracy" and report["main_score"] == pytest.approx(1.0)
    assert report["f1"] == pytest.approx(1.0) and report["n_examples"] == 15
    assert len(report["scores_per_experiment"]) == 10 and report["n_not_converged"] == 0
    assert 8 * 3 <= report["n_train"] <= 12 * 3  # 8 a label per experiment, over 10 draws
    assert "ap" not in report  # three labels: no average precision


def test_classification_mean_over_experiments(tmp_path: Path) -> None:
    """Overlapping classes: experiments differ, and the report is their mean."""
    rng = np.random.default_rng(0)
    rows = [
        {"text": f"{rng.normal(c, 1.5):.3f} {rng.normal(0, 1):.3f} # {i}", "label": str(c),
         "split": "train" if i < 40 else "test"}
        for i in range(60) for c in (0, 1)
    ]  # fmt: skip
    path = _jsonl(tmp_path / "one-file.jsonl", rows)
    report = evaluate_task(VectorEncoder(), path, "classification", n_experiments=5)
    runs = report["scores_per_experiment"]
    assert len(runs) == 5 and len({r["accuracy"] for r in runs}) > 1
    assert report["accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in runs]))
    assert report["ap"] == pytest.approx(np.mean([r["ap"] for r in runs]))
    assert report["n_examples"] == 40  # the lines marked "test"


def test_classification_needs_two_training_labels(tmp_path: Path) -> None:
    _jsonl(tmp_path / "d" / "train.jsonl", [{"text": "1 0", "label": "a"}])
    _jsonl(tmp_path / "d" / "test.jsonl", [{"text": "1 0", "label": "a"}])
    with pytest.raises(InvalidInput, match="at least two labels"):
        evaluate_task(VectorEncoder(), tmp_path / "d", "classification")


# --- the entry point, formats and bad input ---------------------------------------------


def test_report_shape_and_dim(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", _separated())
    report = evaluate_task(VectorEncoder(), path, "clustering", dim=2)
    assert report["task"] == "clustering" and report["main_score"] == report["v_measure"]
    assert report["config"]["dim"] == 2 and report["config"]["model"] == "vector-3"
    assert report["config"]["full_dim"] == DIM and report["config"]["path"] == str(path)
    with pytest.raises(DimensionMismatch):
        evaluate_task(VectorEncoder(), path, "clustering", dim=4)


def test_sts_task(tmp_path: Path) -> None:
    sts = tmp_path / "sts.csv"
    rows = [("5.0", "1 0", "1 0.1"), ("2.5", "1 0", "1 1"), ("0.0", "1 0", "0 1")]
    sts.write_text("".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(rows)))
    report = evaluate_task(VectorEncoder(), sts, "sts")
    assert report["main_metric"] == "spearman" and report["main_score"] == pytest.approx(1.0)
    assert report["n_examples"] == 3


@pytest.mark.parametrize(
    ("content", "task", "needle"),
    [
        ('{"text": "1 0", "label": "a"}\n{"text": "1 0", "label"\n', "clustering", ":2: malformed"),
        ('["not", "an", "object"]\n', "clustering", ":1: expected a JSON object"),
        ('{"label": "a"}\n', "clustering", ":1: field 'text'"),
        ('{"text": "1 0", "label": 1.5}\n', "clustering", ":1: field 'label'"),
        ('{"sentence1": "1", "sentence2": "2", "label": 2}\n', "pair-classification", ":1: "),
        ('{"sentence1": "1", "label": 1}\n', "pair-classification", "'sentence2'"),
        ('{"query": 3, "positive": [], "negative": []}\n', "reranking", ":1: field 'query'"),
        ('{"query": "q", "positive": "p"}\n', "reranking", ":1: field 'positive'"),
        ("\n\n", "reranking", "no examples"),
        ('{"text": "1 0", "label": "a", "split": "test"}\n', "classification",
         "no examples for split 'train'"),
        ('{"text": "1", "label": "a", "split": "train"}\n{"text": "1", "label": "b"}\n',
         "classification", ":2: no 'split' field"),
    ],
)  # fmt: skip
def test_bad_files_name_file_and_line(tmp_path: Path, content: str, task: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput, match="bad.jsonl") as caught:
        evaluate_task(VectorEncoder(), path, task)
    assert needle in str(caught.value)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown task 'ranking'; choose one of retrieval"):
        evaluate_task(VectorEncoder(), tmp_path, "ranking")
    with pytest.raises(InvalidInput, match="unknown task option.*n_exp.*valid: split"):
        evaluate_task(VectorEncoder(), tmp_path, "classification", n_exp=3)
    with pytest.raises(InvalidInput, match="samples_per_label must be an integer >= 1"):
        evaluate_task(VectorEncoder(), tmp_path, "classification", samples_per_label=0)
    with pytest.raises(InvalidInput, match="split 'train' holds the classifier's training"):
        evaluate_task(VectorEncoder(), tmp_path, "classification", split="train")
    with pytest.raises(InvalidInput, match="no test.jsonl in this folder"):
        evaluate_task(VectorEncoder(), tmp_path, "clustering")
    with pytest.raises(InvalidInput, match="no such file"):
        evaluate_task(VectorEncoder(), tmp_path / "missing.jsonl", "clustering")


def test_split_selects_file_or_lines(tmp_path: Path) -> None:
    rows = [{**r, "split": "dev"} for r in _separated()]
    rows += [{"text": "0 0 # x", "label": "x", "split": "test"}]
    path = _jsonl(tmp_path / "c.jsonl", rows)
    assert evaluate_task(VectorEncoder(), path, "clustering", split="dev")["n_examples"] == 12
    assert evaluate_task(VectorEncoder(), path, "clustering")["n_examples"] == 1
    _jsonl(tmp_path / "folder" / "dev.jsonl", _separated())
    report = evaluate_task(VectorEncoder(), tmp_path / "folder", "clustering", split="dev")
    assert report["n_examples"] == 12


def test_scikit_learn_missing_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    path = _jsonl(tmp_path / "c.jsonl", _separated())
    with pytest.raises(MissingDependency, match=r"embedstack\[eval\]"):
        evaluate_task(VectorEncoder(), path, "clustering")


def test_tasks_import_no_scikit_learn() -> None:
    code = "import embedstack.eval.tasks, sys; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- a real model (tier 1) --------------------------------------------------------------

TOPICS = {
    "cooking": ["Whisk the eggs with sugar until fluffy.",
                "Simmer the tomato sauce for twenty minutes.",
                "Knead the bread dough and let it rise.",
                "Season the steak with salt and pepper before grilling."],
    "astronomy": ["The telescope revealed a distant spiral galaxy.",
                  "Jupiter has dozens of moons orbiting it.",
                  "A supernova briefly outshines its entire galaxy.",
                  "Astronomers measured the redshift of the quasar."],
    "finance": ["The central bank raised interest rates again.",
                "Stock prices fell after the earnings report.",
                "Bond yields climbed as inflation fears grew.",
                "The company issued new shares to raise capital."],
}  # fmt: skip


def test_minilm_separates_topics(tmp_path: Path, minilm: Any) -> None:
    rows = [{"text": t, "label": k} for k, texts in TOPICS.items() for t in texts]
    clusters = evaluate_task(minilm, _jsonl(tmp_path / "topics.jsonl", rows), "clustering")
    assert clusters["main_score"] == pytest.approx(1.0)
    _jsonl(tmp_path / "cls" / "train.jsonl", [r for i, r in enumerate(rows) if i % 4 != 3])
    _jsonl(tmp_path / "cls" / "test.jsonl", [r for i, r in enumerate(rows) if i % 4 == 3])
    report = evaluate_task(minilm, tmp_path / "cls", "classification")
    assert report["main_score"] == pytest.approx(1.0) and report["n_examples"] == 3
    assert report["config"]["model"] == "all-MiniLM-L6-v2"


# --- CLI --------------------------------------------------------------------------------


def test_cli_task_round_trip(tmp_path: Path, vector_model: str) -> None:
    data = _jsonl(tmp_path / "clusters.jsonl", _separated())
    out = tmp_path / "report.json"
    args = ["eval", str(data), "--task", "clustering", "--model", vector_model, "--json", str(out)]
    assert run(args) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "clustering" and report["main_score"] == pytest.approx(1.0)
    assert report["config"]["model"] == vector_model
    _jsonl(tmp_path / "pairs" / "dev.jsonl", [
        {"sentence1": "1 0", "sentence2": "1 0.1", "label": 1},
        {"sentence1": "1 0", "sentence2": "0 1", "label": 0},
    ])  # fmt: skip
    args = ["eval", str(tmp_path / "pairs"), "--task", "pair-classification", "--split", "dev",
            "--model", vector_model, "--dim", "2", "--json", str(out)]  # fmt: skip
    assert run(args) == 0
    report = json.loads(out.read_text())
    assert report["main_metric"] == "max_ap" and report["config"]["split"] == "dev"
    assert report["config"]["dim"] == 2


def test_cli_retrieval_stays_the_default(tmp_path: Path, vector_model: str) -> None:
    assert "retrieval" in TASKS
    data = _jsonl(tmp_path / "clusters.jsonl", _separated())
    # without --task the path is read as a BEIR folder, as before
    assert run(["eval", str(data), "--model", vector_model]) == 2


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--task", "ranking"], "unknown task 'ranking'"),
        (["--task", "clustering", "--mode", "dense"], "--mode: only for --task retrieval"),
        (["--task", "clustering", "--depth", "10"], "--depth: only for --task retrieval"),
        (["--task", "reranking"], "bad.jsonl:1: malformed JSON"),
        (["--task", "clustering", "--dim", "9"], "dim must be in [1, 3]"),
    ],
)
def test_cli_task_errors_are_one_line(
    tmp_path: Path, vector_model: str, extra: list[str], needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n" if "reranking" in extra else "".join(
        json.dumps(r) + "\n" for r in _separated()), encoding="utf-8")  # fmt: skip
    assert run(["eval", str(path), "--model", vector_model, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
