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
from embedstack.eval.pick.task_stats import paired_bootstrap, similarity_scores, weighted_ap
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
        assert cand["metrics"][main] == pytest.approx(expected["main_score"], abs=1e-12)
    # bytes per stored vector: float32 4 B a dimension, int8 1 B + its ranges, binary 1 bit
    n = saved["data"]["n_docs"]
    assert cands[f"{good}|64|float32"]["bytes_per_doc"] == 256
    assert cands[f"{good}|64|int8"]["bytes_per_doc"] == pytest.approx(64 + 2 * 64 * 4 / n)
    assert cands[f"{good}|64|binary"]["bytes_per_doc"] == 8
    best = max(saved["candidates"], key=lambda c: c["metrics"][main])
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
    tmp_path: Path, task_files: dict[str, Path], models: tuple[str, str]
) -> None:
    good, junk = models
    for task in ("classification", "clustering"):
        options = _options(tmp_path, task, models, dims=("full",), precisions=("float32",))
        result = run_pick(task_files[task], tmp_path / task, options)
        cands = {c["id"]: c for c in result["candidates"]}
        main = MAIN_METRICS[task]
        good_id, junk_id = f"{good}|64|float32", f"{junk}|32|float32"
        assert cands[good_id]["metrics"][main] > cands[junk_id]["metrics"][main] + 0.3
        # junk is smaller (so on the front) but significantly worse: good is recommended
        assert cands[junk_id]["pareto"] and cands[junk_id]["bytes_per_doc"] == 128
        assert cands[junk_id]["significance"]["significant"] is True
        assert result["recommendation"]["candidate"] == good_id
        assert (tmp_path / task / "report.md").is_file()
        assert main in (tmp_path / task / "report.md").read_text()
    sig = cands[junk_id]["significance"]
    assert "k-means seeds" in sig["test"] and sig["p_value"] == pytest.approx(2 / 1024)


def test_classification_test_is_over_examples_and_experiments(
    tmp_path: Path, task_files: dict[str, Path], models: tuple[str, str]
) -> None:
    options = _options(tmp_path, "classification", models, dims=("full",),
                       precisions=("float32",))  # fmt: skip
    result = run_pick(task_files["classification"], tmp_path / "out", options)
    junk = next(c for c in result["candidates"] if c["model"] == models[1])
    sig = junk["significance"]
    assert "test examples" in sig["test"] and "10 seeded" in sig["test"]
    assert sig["p_value"] < 0.01 and sig["p_value_experiments"] == pytest.approx(2 / 1024)
    assert len(junk["task_detail"]["accuracy_per_experiment"]) == 10
    assert result["data"]["n_examples"] == 75 and 24 <= result["data"]["n_train"] <= 36


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


def test_paired_bootstrap() -> None:
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
    delta, p = paired_bootstrap(sharp, noisy, labels, n_samples=300)
    assert delta < -0.2 and p == pytest.approx(1 / 301)
    assert paired_bootstrap(sharp, sharp, labels, n_samples=100) == (0.0, 1.0)
    with pytest.raises(InvalidInput, match="same pairs"):
        paired_bootstrap(sharp, noisy[:, :10], labels)


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
