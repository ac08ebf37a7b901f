"""`embedstack pick --task` on tiny generated task files with hashing encoders (tier 0): the
quality column is the task's main score, a clearly better model is recommended, the tests
each task calls for, and bad input."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import HashEncoder, ModelSpec, register_model, unregister_model
from embedstack.cli import run
from embedstack.errors import InvalidInput
from embedstack.eval.pick import PickOptions, run_pick
from embedstack.eval.pick.recommend import significance
from embedstack.eval.pick.task_measure import CLUSTER_SEEDS
from embedstack.eval.pick.task_stats import (
    paired_bootstrap,
    resample_counts,
    similarity_scores,
    weighted_ap,
)
from embedstack.eval.tasks import MAIN_METRICS, evaluate_task

pytest.importorskip("sklearn")

TOPICS = {
    "animals": "cat dog mouse horse cow sheep bird fish".split(),
    "weather": "rain sun snow wind storm cloud fog hail".split(),
    "money": "stock market bank loan rate price bond fund".split(),
}
NOISE = "the a of and to in is on with for at by from it this that".split()


def _text(rng: random.Random, topic: str) -> str:
    words = rng.sample(TOPICS[topic], 3) + rng.sample(NOISE, 4)
    rng.shuffle(words)
    return " ".join(words)


def _write(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def task_files(tmp_path: Path) -> dict[str, Path]:
    rng = random.Random(0)
    topics = list(TOPICS)
    classification = [
        {"text": _text(rng, t), "label": t, "split": split}
        for split, n in (("train", 12), ("test", 25))
        for t in topics
        for _ in range(n)
    ]
    clustering = [
        {"text": _text(rng, t), "label": t, "set": s}
        for s in (0, 1)
        for t in topics
        for _ in range(15)
    ]
    pairs = []
    for i in range(90):
        a = topics[i % 3]
        b = a if i % 2 == 0 else topics[(i + 1) % 3]
        pairs.append({"sentence1": _text(rng, a), "sentence2": _text(rng, b), "label": int(a == b)})
    reranking = []
    for i in range(40):
        t = topics[i % 3]
        others = [o for o in topics if o != t]
        negative = [_text(rng, rng.choice(others)) for _ in range(5)]
        positive = [_text(rng, t) for _ in range(2)]
        reranking.append({"query": _text(rng, t), "positive": positive, "negative": negative})
    folder = tmp_path / "tasks"
    folder.mkdir()
    return {
        "classification": _write(folder / "classification.jsonl", classification),
        "clustering": _write(folder / "clustering.jsonl", clustering),
        "pair-classification": _write(folder / "pairs.jsonl", pairs),
        "reranking": _write(folder / "reranking.jsonl", reranking),
    }


class JunkEncoder(HashEncoder):
    """Hashes each whole text to one bucket: vectors that carry nothing about the topic."""

    def encode(self, texts: Iterable[str]) -> Any:
        return super().encode([hashlib.sha1(t.encode()).hexdigest() for t in texts])


class TopicEncoder(HashEncoder):
    """One-hot of the topic a text's words come from (every generated text has exactly three
    words of one topic): the vectors of a topic are identical and the topics' orthogonal, so
    k-means on them (k-means++ never seeds a centre on a point already chosen) finds the
    topics exactly, V-measure 1.0 on every seed, and a classifier trained on balanced
    samples of the three points labels every test text right, accuracy 1.0."""

    def encode(self, texts: Iterable[str]) -> Any:
        items = list(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, text in enumerate(items):
            for col, words in enumerate(TOPICS.values()):
                out[row, col] = len(set(text.split()) & set(words))
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture()
def topic() -> Iterator[str]:
    spec = ModelSpec("test-task-topic", "t/topic", 64, 512, factory=TopicEncoder.from_spec)
    register_model(spec, overwrite=True)
    yield spec.name
    unregister_model(spec.name)


@pytest.fixture()
def models() -> Iterator[tuple[str, str]]:
    specs = (
        ModelSpec("test-task-good", "t/good", 64, 512, factory=HashEncoder.from_spec),
        ModelSpec("test-task-junk", "t/junk", 32, 512, factory=JunkEncoder.from_spec),
    )
    for spec in specs:
        register_model(spec, overwrite=True)
    yield specs[0].name, specs[1].name
    for spec in specs:
        unregister_model(spec.name)


def _options(tmp_path: Path, task: str, models: tuple[str, ...], **kwargs: Any) -> PickOptions:
    return PickOptions(task=task, models=models, cache_dir=tmp_path / "cache",
                       n_permutations=2000, show_progress=False, **kwargs)  # fmt: skip


@pytest.mark.parametrize("task", list(MAIN_METRICS)[2:])
def test_quality_column_is_the_tasks_main_score(
    tmp_path: Path,
    task_files: dict[str, Path],
    models: tuple[str, str],
    task: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "embedstack.eval.report", None)  # pick.json only
    good = models[0]
    options = _options(tmp_path, task, (good,), dims=("full", "32"),
                       precisions=("float32", "int8", "binary"))  # fmt: skip
    result = run_pick(task_files[task], tmp_path / "out", options)
    saved = json.loads((tmp_path / "out" / "pick.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["task"] == task and saved["kind"] == "embedstack.pick"
    main = MAIN_METRICS[task]
    cands = {c["id"]: c for c in saved["candidates"]}
    assert sorted(cands) == sorted(f"{good}|{d}|{p}" for d in (64, 32)
                                   for p in ("float32", "int8", "binary"))  # fmt: skip
    for dim in (64, 32):
        expected = evaluate_task(HashEncoder(64), task_files[task], task, dim=dim)
        cand = cands[f"{good}|{dim}|float32"]
        assert cand["main_metric"] == main == next(iter(cand["metrics"]))
        if task == "clustering":  # the mean of k-means runs at seeds 42, 43, ... (one each)
            runs = [evaluate_task(HashEncoder(64), task_files[task], task, dim=dim, seed=42 + i)
                    for i in range(CLUSTER_SEEDS)]  # fmt: skip
            assert cand["task_detail"]["v_measure_per_seed"] == [r["main_score"] for r in runs]
            assert cand["metrics"]["v_measure_one_run"] == expected["main_score"]
            expected = {"main_score": sum(r["main_score"] for r in runs) / CLUSTER_SEEDS}
        assert cand["metrics"][main] == pytest.approx(expected["main_score"], abs=1e-12)
    # bytes per stored vector: float32 4 B a dimension, int8 1 B + its ranges, binary 1 bit
    n = saved["data"]["n_docs"]
    assert cands[f"{good}|64|float32"]["bytes_per_doc"] == 256
    assert cands[f"{good}|64|int8"]["bytes_per_doc"] == pytest.approx(64 + 2 * 64 * 4 / n)
    assert cands[f"{good}|64|binary"]["bytes_per_doc"] == 8
    # "best" is any top-scoring candidate (an int8 copy can cluster exactly as float32 does),
    # the tie broken as documented: lowest p99, then fewest bytes, then candidate order
    top = max(c["metrics"][main] for c in saved["candidates"])
    tied = [(c["latency_ms_p99"], c["bytes_per_doc"], i, c)
            for i, c in enumerate(saved["candidates"]) if c["metrics"][main] == top]  # fmt: skip
    best = min(tied, key=lambda t: t[:3])[3]
    for cand in saved["candidates"]:
        sig = cand["significance"]
        assert cand["latency_ms_p99"] >= cand["latency_ms_p50"] > 0
        if sig["p_value"] is None:
            continue
        assert sig["baseline"] == best["id"] and 0 < sig["p_value"] <= 1
        # delta is always the difference of the quality column
        assert sig["delta"] == pytest.approx(cand["metrics"][main] - best["metrics"][main])
    rec = saved["recommendation"]
    assert cands[rec["candidate"]]["pareto"] and rec["mode"]["mode"] == "dense"
    assert task in rec["mode"]["reason"] and rec["evaluation_plan"]


def test_clearly_better_model_is_recommended(
    tmp_path: Path, task_files: dict[str, Path], models: tuple[str, str], topic: str
) -> None:
    """A smaller model (on the Pareto front) that is significantly worse is not recommended.

    The better model is :class:`TopicEncoder`, perfect by construction (1.0 on both tasks);
    the junk one hashes whole texts. The exact test over 10 k-means seeds then has the
    p-value ``2 / 2**10`` as soon as junk is below 1.0 on every seed (only the all-plus and
    all-minus sign vectors reach the observed mean), which is below 0.05 after Holm's
    correction over one comparison, so junk is not eligible however small it is.
    """
    junk = models[1]
    for task in ("classification", "clustering"):
        options = _options(tmp_path, task, (topic, junk), dims=("full",),
                           precisions=("float32",))  # fmt: skip
        result = run_pick(task_files[task], tmp_path / task, options)
        cands = {c["id"]: c for c in result["candidates"]}
        main = MAIN_METRICS[task]
        good_id, junk_id = f"{topic}|64|float32", f"{junk}|32|float32"
        assert cands[good_id]["metrics"][main] == 1.0 > cands[junk_id]["metrics"][main]
        # junk is smaller (so on the front) but significantly worse: good is recommended
        assert cands[junk_id]["pareto"] and cands[junk_id]["bytes_per_doc"] == 128
        assert cands[junk_id]["significance"]["significant"] is True
        assert result["recommendation"]["candidate"] == good_id
        assert (tmp_path / task / "report.md").is_file()
        assert main in (tmp_path / task / "report.md").read_text()
    sig = cands[junk_id]["significance"]
    per_seed = zip(cands[good_id]["task_detail"]["v_measure_per_seed"],
                   cands[junk_id]["task_detail"]["v_measure_per_seed"], strict=True)  # fmt: skip
    assert all(g == 1.0 > j for g, j in per_seed)
    assert "k-means seeds" in sig["test"] and sig["p_value"] == 2 / 2**10


def test_classification_test_is_over_examples_and_experiments(
    tmp_path: Path, task_files: dict[str, Path], models: tuple[str, str], topic: str
) -> None:
    """The main test pairs over test examples (2000 random sign vectors), the second over the
    10 experiments (exact). The perfect model scores 1 on every unit, so every nonzero
    difference has one sign and only a sign vector constant over them reaches the observed
    mean: exact p = 2 / 2**10 once junk is below 1.0 in every experiment, and
    p = 1 / 2001 unless one of 2000 draws is constant over the ``m`` examples junk gets
    wrong at least once (chance at most 2000 * 2**(1 - m))."""
    options = _options(tmp_path, "classification", (topic, models[1]), dims=("full",),
                       precisions=("float32",))  # fmt: skip
    result = run_pick(task_files["classification"], tmp_path / "out", options)
    good, junk = result["candidates"]
    sig = junk["significance"]
    assert "test examples" in sig["test"] and "10 seeded" in sig["test"]
    per_experiment = junk["task_detail"]["accuracy_per_experiment"]
    assert (
        len(per_experiment) == 10 and good["task_detail"]["accuracy_per_experiment"] == [1.0] * 10
    )
    assert max(per_experiment) < 1.0 and sig["p_value_experiments"] == 2 / 2**10
    m = round(result["data"]["n_examples"] * (1.0 - per_experiment[0]))  # wrong in the first
    assert m >= 40 and sig["p_value"] == pytest.approx(1 / (options.n_permutations + 1))
    assert result["data"]["n_examples"] == 75 and 24 <= result["data"]["n_train"] <= 36


def test_best_candidate_tie_break_is_documented_rule() -> None:
    """Equal main metrics: lower p99 wins, then fewer bytes, then the earlier candidate."""

    def cand(ident: str, score: float, p99: float, size: float) -> dict[str, Any]:
        return {"id": ident, "metrics": {"v_measure": score}, "main_metric": "v_measure",
                "latency_ms_p99": p99, "bytes_per_doc": size}  # fmt: skip

    def compare(baseline: str, other: str) -> tuple[float, float]:
        return 0.0, 1.0

    cases = [
        ([cand("f32", 0.5, 2.0, 256), cand("i8", 0.5, 2.0, 72), cand("low", 0.4, 1.0, 8)], "i8"),
        ([cand("slow", 0.5, 3.0, 8), cand("fast", 0.5, 2.0, 256)], "fast"),
        ([cand("first", 0.5, 2.0, 72), cand("second", 0.5, 2.0, 72)], "first"),
    ]
    for cands, expected in cases:
        for order in (cands, cands[::-1]) if expected != "first" else (cands,):
            best = significance(order, {}, 10, 0, compare=compare)
            assert best["id"] == expected
            assert all(c["significance"]["baseline"] == expected for c in order)


def test_weighted_ap_matches_scikit_learn_with_ties_and_weights() -> None:
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = (rng.random(60) < 0.4).astype(int)
    weights = rng.integers(0, 4, size=(5, 60)).astype(float)
    weights[:, labels == 1] += 1  # every row keeps a positive
    got = weighted_ap(scores, labels, weights)
    for row, value in zip(weights, got, strict=True):
        assert value == pytest.approx(average_precision_score(labels, scores, sample_weight=row))
    assert weighted_ap(scores, labels)[0] == pytest.approx(average_precision_score(labels, scores))


def _sklearn_max_ap(scores: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    """MTEB's max AP of the pairs ``rows`` (repeats allowed), by scikit-learn; 0 without a
    positive (the convention of :func:`weighted_ap`)."""
    from sklearn.metrics import average_precision_score

    if not labels[rows].any():
        return 0.0
    return max(float(average_precision_score(labels[rows], s[rows])) for s in scores)


def test_paired_bootstrap_at_its_floor_when_every_resample_favours_one() -> None:
    """``best`` ranks the 40 positives of 80 pairs above the negatives on all four functions
    (AP 1 on any resample holding a positive); ``other`` ranks them below (AP
    ``sum_i i / (40 + i) / 40`` < 1/2). A resample holding both classes then has
    ``d_b = AP_other_b - 1`` strictly between ``-1 < 2d`` and 0, so it never reaches
    ``|d_b - d| >= |d|``; a one-class resample has ``d_b = 0`` and does. Hence
    ``p = (1 + #one-class resamples) / (B + 1)``, and with 2 in 2**80 chances of a
    one-class resample that is ``1 / (B + 1)``."""
    labels = np.array([1, 0] * 40)
    jitter = np.arange(80) / 80  # no ties within a class
    best = np.tile(10.0 * labels + jitter, (4, 1))
    other = np.tile(-10.0 * labels + jitter, (4, 1))
    ap_other = sum(i / (40 + i) for i in range(1, 41)) / 40
    assert ap_other < 0.5
    for n_samples in (1, 250):
        delta, p = paired_bootstrap(best, other, labels, n_samples=n_samples, seed=7)
        assert delta == pytest.approx(ap_other - 1.0, abs=1e-12)
        draws = np.concatenate(list(resample_counts(80, n_samples, 7)))
        positives = draws @ labels
        one_class = int(np.count_nonzero((positives == 0) | (positives == 80)))
        assert one_class == 0 and p == (1 + one_class) / (n_samples + 1) == 1 / (n_samples + 1)


def test_paired_bootstrap_matches_a_plain_recomputation() -> None:
    """A difference with a real spread over pairs: the p-value is recomputed from the same
    resamples with scikit-learn's average precision on the repeated pairs."""
    from embedstack.eval.tasks.pair_classification import pair_scores

    rng = np.random.default_rng(0)
    labels = np.array([1, 0] * 40)
    good = rng.normal(size=(80, 8)) + labels[:, None]
    left, right = good + rng.normal(0, 0.3, good.shape), good + rng.normal(0, 0.3, good.shape)
    sharp = similarity_scores(left, right)
    noisy = similarity_scores(rng.normal(size=(80, 8)), rng.normal(size=(80, 8)))
    assert float(weighted_ap(sharp[0], labels)[0]) == pytest.approx(
        pair_scores(left, right, labels)["cosine_ap"]
    )
    n_samples, everything = 300, np.arange(80)
    draws = np.concatenate(list(resample_counts(80, n_samples, 0)))
    assert draws.shape == (n_samples, 80) and set(draws.sum(axis=1)) == {80}
    observed = _sklearn_max_ap(noisy, labels, everything) - _sklearn_max_ap(
        sharp, labels, everything
    )
    hits = 0
    for counts in draws:
        rows = np.repeat(everything, counts)
        d_b = _sklearn_max_ap(noisy, labels, rows) - _sklearn_max_ap(sharp, labels, rows)
        hits += abs(d_b - observed) >= abs(observed)  # centred, two-sided
    delta, p = paired_bootstrap(sharp, noisy, labels, n_samples=n_samples)
    assert delta == pytest.approx(observed, abs=1e-12)
    assert p == (hits + 1) / (n_samples + 1)
    # swapping the candidates negates the difference and keeps p; identical ones: p = 1
    assert paired_bootstrap(noisy, sharp, labels, n_samples=n_samples) == pytest.approx((-delta, p))
    assert paired_bootstrap(sharp, sharp, labels, n_samples=100) == (0.0, 1.0)
    with pytest.raises(InvalidInput, match="same pairs"):
        paired_bootstrap(sharp, noisy[:, :10], labels)
    with pytest.raises(InvalidInput, match="n_samples"):
        paired_bootstrap(sharp, noisy, labels, n_samples=0)


def test_bad_input(
    tmp_path: Path,
    task_files: dict[str, Path],
    models: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = str(tmp_path / "out")
    good = models[0]
    bad = tmp_path / "bad.jsonl"
    lines = task_files["classification"].read_text().splitlines()
    lines[2] = json.dumps({"text": "no label here", "split": "test"})
    bad.write_text("\n".join(lines) + "\n")
    assert run(["pick", str(bad), "--out", out, "--task", "classification", "--models", good]) == 2
    assert f"{bad}:3: field 'label'" in capsys.readouterr().err
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d", "text": "x"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    assert run(["pick", str(beir), "--out", out, "--task", "clustering", "--models", good]) == 2
    assert "is a BEIR folder" in capsys.readouterr().err
    for task, path in task_files.items():
        assert run(["pick", str(path), "--out", out, "--models", good]) == 2
        err = capsys.readouterr().err
        assert f"{path}:1: a " in err and f"--task {task.split()[0]}" in err
    assert run(["pick", str(task_files["clustering"]), "--out", out, "--task", "sts"]) == 2
    assert "unknown 'sts'" in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="--modes applies to retrieval"):
        run_pick(task_files["clustering"], out, _options(tmp_path, "clustering", (good,),
                                                         modes=("dense",)))  # fmt: skip


def test_cli_task_pick(
    tmp_path: Path,
    task_files: dict[str, Path],
    models: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code = run(["pick", str(task_files["pair-classification"]), "--out", str(out), "--task",
                "pair-classification", "--models", ",".join(models), "--dims", "full",
                "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "max_ap" in captured.out and "paired bootstrap" in captured.out
    assert "recommended" in captured.out and "Traceback" not in captured.err
    saved = json.loads((out / "pick.json").read_text())
    assert "--task pair-classification" in saved["command"]
    assert saved["recommendation"]["candidate"].startswith(models[0])
