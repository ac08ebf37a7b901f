"""`embedstack pick` plans its corpus encodings within --time-budget-min (tier 0).

Fake slow encoders sleep a fixed time per document (deterministic vectors from hashed
tokens): one whose float32 estimate is over the budget and that has no int8 weights (listed
as not measured, with the numbers the plan used), one whose guarded int8 weights fit (encoded
with them, the cosine cost recorded), one that slows down after its probe (stopped at the
deadline). The tiny corpus keeps each run to a few seconds.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import HashEncoder, ModelSpec, register_model, unregister_model
from embedstack.eval.pick import PickOptions, run_pick
from embedstack.eval.pick import measure as pick_measure
from embedstack.eval.pick import plan as pick_plan

DELAY = 0.05  # seconds per document, float32 weights
INT8_SPEEDUP = 10.0
PROBE = 4  # probe documents in these tests (the default is 16)
N_DOCS = 80
BUDGET_S = 100 * DELAY  # float32 needs 80 x DELAY: over 75% of it; int8 (8 x DELAY) fits


class SlowEncoder:
    """Sleeps ``delay`` per document (``delay / INT8_SPEEDUP`` with int8 weights); records
    how many documents each instance encoded. int8 vectors are float32 ones nudged by a
    fixed pattern, like a close quantization."""

    instances: list[SlowEncoder] = []

    def __init__(
        self, spec: ModelSpec, quantize: str | None, int8: bool, slows_after: int, base: float
    ) -> None:
        self.inner = HashEncoder(spec.dim, name=spec.name)
        self.quantize = quantize if int8 else None  # a model without int8 weights ignores it
        self.delay = base * DELAY / (INT8_SPEEDUP if self.quantize == "int8" else 1.0)
        self.slows_after = slows_after
        self.max_length = spec.max_length
        self.docs = 0
        SlowEncoder.instances.append(self)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model_id(self) -> str:  # the same for both precisions, as for real encoders
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode_documents(self, texts: Iterable[str]) -> np.ndarray:
        texts = list(texts)
        slow = self.slows_after and self.docs >= self.slows_after
        time.sleep(self.delay * len(texts) * (20 if slow else 1))
        self.docs += len(texts)
        vecs = self.inner.encode_documents(texts)
        if self.quantize == "int8":
            vecs = vecs + 0.05 * np.sign(np.sin(np.arange(vecs.shape[1])))[None, :]
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs.astype(np.float32)

    def encode_queries(self, texts: Iterable[str]) -> np.ndarray:
        return self.inner.encode_queries(texts)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        return self.inner.encode(texts)


def _factory(int8: bool, slows_after: int = 0, base: float = 1.0) -> Any:
    def build(spec: ModelSpec, quantize: str | None = None, **_: Any) -> SlowEncoder:
        return SlowEncoder(spec, quantize, int8, slows_after, base)

    return build


@pytest.fixture()
def slow_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(pick_plan, "PROBE_DOCS", PROBE)
    monkeypatch.setitem(sys.modules, "embedstack.eval.report", None)  # pick.json only: fast
    SlowEncoder.instances = []
    names = {"no_int8": "test-slow-fp32", "int8": "test-slow-int8", "drifts": "test-slow-drift"}
    specs = [
        ModelSpec(names["no_int8"], "t/slow1", 64, 512, factory=_factory(False)),
        ModelSpec(names["int8"], "t/slow2", 64, 512, factory=_factory(True)),
        ModelSpec(names["drifts"], "t/slow3", 64, 512, factory=_factory(False, PROBE + 1, 0.25)),
    ]
    for spec in specs:
        register_model(spec, overwrite=True)
    yield names
    for spec in specs:
        unregister_model(spec.name)


@pytest.fixture()
def beir(tmp_path: Path) -> Path:
    import random

    rng = random.Random(0)
    words = "cat dog rain sun stock market tree river car road city bread apple wave".split()
    root = tmp_path / "tinybeir"
    (root / "qrels").mkdir(parents=True)
    docs = {f"d{i}": " ".join(rng.choice(words) for _ in range(24)) for i in range(N_DOCS)}
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, text in docs.items():
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f, (root / "qrels" / "test.tsv").open("w") as q:
        q.write("query-id\tcorpus-id\tscore\n")
        for j in range(12):
            f.write(json.dumps({"_id": f"q{j}", "text": " ".join(docs[f"d{j}"].split()[:6])}))
            f.write("\n")
            q.write(f"q{j}\td{j}\t1\n")
    return root


def _options(tmp_path: Path, models: tuple[str, ...], **kwargs: Any) -> PickOptions:
    kwargs = {"modes": ("dense",), **kwargs}
    return PickOptions(models=models, dims=("full",), precisions=("float32",),
                       cache_dir=tmp_path / "cache", n_permutations=200, show_progress=False,
                       **kwargs)  # fmt: skip


def test_a_model_over_the_budget_is_listed_with_its_numbers(
    tmp_path: Path, beir: Path, slow_models: dict[str, str]
) -> None:
    name = slow_models["no_int8"]
    options = _options(tmp_path, (name, "test-slow-int8"), time_budget_min=BUDGET_S / 60)
    result = run_pick(beir, tmp_path / "out", options)
    assert result["elapsed_s"] <= BUDGET_S  # the bound holds
    [entry] = result["not_measured"]
    assert entry["model"] == name and entry["reason"] == "time_budget"
    plan = result["plan"]
    probe = entry["probes"]["float32"]
    assert probe["docs"] == PROBE == plan["probe_docs"]
    # the estimate: probe seconds x corpus tokens / sample tokens, close to 80 x DELAY
    assert entry["estimated_encode_s"] == pytest.approx(probe["seconds"] * probe["token_scale"])
    assert entry["estimated_encode_s"] == pytest.approx(N_DOCS * DELAY, rel=0.35)
    assert list(entry["estimates_s"]) == ["float32"]  # it has no int8 weights to try
    # what was left for it: the encoding budget minus what the int8 model took (its estimate,
    # and the time its int8 weights took to load and probe)
    [other] = result["models"]
    assert plan["int8_probe_s"] >= PROBE * DELAY / INT8_SPEEDUP
    assert entry["available_s"] == pytest.approx(
        plan["encode_budget_s"] - plan["int8_probe_s"] - other["estimated_encode_s"]
    )
    assert entry["over_by_s"] == pytest.approx(entry["estimated_encode_s"] - entry["available_s"])
    assert plan["encode_budget_s"] == pytest.approx(
        pick_plan.ENCODE_SHARE * (BUDGET_S - plan["probed_at_s"]), rel=0.05
    )
    spent = plan["probed_at_s"]
    before = plan["estimated_encode_s"] + plan["int8_probe_s"]
    include = math.ceil((spent + before / pick_plan.ENCODE_SHARE
                         + entry["estimated_encode_s"] / pick_plan.ENCODE_SHARE) / 60)  # fmt: skip
    assert entry["time_budget_min_to_include"] == include
    message = entry["message"]
    assert f"estimated {entry['estimated_encode_s'] / 60:.1f} min" in message
    assert f"over the budget by {entry['over_by_s'] / 60:.1f} min" in message
    assert f"--time-budget-min {include}" in message and f"--models {name}" in message
    assert message in result["recommendation"]["warnings"]  # the CLI prints these
    assert all(c["model"] != name for c in result["candidates"])
    # the model never encoded more than its probe (and the warm-up document); asked for int8
    # weights, it had none (its second instance encoded nothing)
    docs = [e.docs for e in SlowEncoder.instances if e.name == name]
    assert docs[0] == PROBE + 1 and sum(docs) == PROBE + 1


def test_int8_weights_are_used_when_only_they_fit(
    tmp_path: Path, beir: Path, slow_models: dict[str, str]
) -> None:
    name = slow_models["int8"]
    options = _options(tmp_path, (name,), time_budget_min=BUDGET_S / 60)
    result = run_pick(beir, tmp_path / "out", options)
    assert result["elapsed_s"] <= BUDGET_S and result["not_measured"] == []
    [model] = result["models"]
    assert model["encoder_precision"] == "int8"
    # timed with the int8 weights' speed (a tenth of float32's; sleeps run long under load)
    assert 0.65 * N_DOCS * DELAY / INT8_SPEEDUP < model["estimated_encode_s"] < N_DOCS * DELAY / 3
    assert "did not fit" in model["plan_note"]
    cosine = model["int8"]["sample_cosine"]
    assert cosine["n_docs"] == PROBE and 0.9 < cosine["min"] <= cosine["mean"] < 1.0
    assert {c["encoder_precision"] for c in result["candidates"] if c["model"]} == {"int8"}
    assert any("guarded int8 weights" in w for w in result["recommendation"]["warnings"])
    fp32, int8 = [e for e in SlowEncoder.instances if e.name == name]
    assert (fp32.quantize, int8.quantize) == (None, "int8")
    assert fp32.docs == PROBE + 1 and int8.docs == PROBE + 1 + N_DOCS
    # int8 vectors are cached apart from float32 ones (the model id is the same)
    from embedstack.eval.pick import load_pick_data

    texts = load_pick_data(beir).doc_texts
    cache = tmp_path / "cache"
    assert pick_measure.cached_corpus(int8, texts, cache, "int8") is not None
    assert pick_measure.cached_corpus(fp32, texts, cache, "float32") is None


def test_float32_only_leaves_it_out(
    tmp_path: Path, beir: Path, slow_models: dict[str, str]
) -> None:
    name = slow_models["int8"]
    options = _options(tmp_path, (name,), time_budget_min=BUDGET_S / 60,
                       encoder_precision="float32", modes=None)  # fmt: skip
    result = run_pick(beir, tmp_path / "out", options)
    assert [e["model"] for e in result["not_measured"]] == [name]
    assert [c["id"] for c in result["candidates"]] == ["bm25"]  # BM25 is still measured


def test_an_encoding_slower_than_its_probe_is_stopped_at_the_deadline(
    tmp_path: Path, beir: Path, slow_models: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pick_measure, "_DEADLINE_CHUNK", 1)
    name = slow_models["drifts"]
    budget = 160 * DELAY  # 20 x DELAY by its probe: fits; then each document takes 20 x longer
    options = _options(tmp_path, (name,), time_budget_min=budget / 60, modes=None)
    result = run_pick(beir, tmp_path / "out", options)
    assert result["elapsed_s"] <= budget
    [entry] = result["not_measured"]
    assert entry["reason"] == "deadline" and 0 < entry["docs_encoded"] < N_DOCS
    assert "stopped after" in entry["message"] and f"--models {name}" in entry["message"]
    assert not (tmp_path / "cache" / "pick").exists()  # nothing half-encoded is cached


def test_a_hopeless_probe_stops_after_one_batch(
    tmp_path: Path, beir: Path, slow_models: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pick_plan, "PROBE_DOCS", 8)
    monkeypatch.setattr(pick_plan, "PROBE_BATCH", 2)
    name = slow_models["no_int8"]
    budget = 10 * DELAY  # 80 x DELAY needed: over 4 x the encoding budget after 2 documents
    options = _options(tmp_path, (name,), time_budget_min=budget / 60, modes=None)
    result = run_pick(beir, tmp_path / "out", options)
    [entry] = result["not_measured"]
    probe = entry["probes"]["float32"]
    assert probe["docs"] == 2 and probe["stopped_early"] is True
    assert entry["estimated_encode_s"] == pytest.approx(N_DOCS * DELAY, rel=0.35)
    [slow] = [e for e in SlowEncoder.instances if e.name == name]
    assert slow.docs == 1 + 2  # the warm-up document and one batch


def test_no_model_fits_and_nothing_else_to_measure(
    tmp_path: Path, beir: Path, slow_models: dict[str, str]
) -> None:
    from embedstack.errors import InvalidInput

    options = _options(tmp_path, (slow_models["no_int8"],), time_budget_min=BUDGET_S / 60)
    with pytest.raises(InvalidInput, match="no model fits --time-budget-min .*over the budget by"):
        run_pick(beir, tmp_path / "out", options)


def test_encoder_precision_is_validated() -> None:
    from embedstack.errors import InvalidInput

    with pytest.raises(InvalidInput, match="--encoder-precision: unknown 'int4'"):
        PickOptions(encoder_precision="int4")


def test_cli_prints_what_was_not_measured(
    tmp_path: Path,
    beir: Path,
    slow_models: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("matplotlib")
    from embedstack.cli import run

    monkeypatch.delitem(sys.modules, "embedstack.eval.report")  # the real report this time

    name = slow_models["no_int8"]
    args = ["pick", str(beir), "--out", str(tmp_path / "o"), "--models", name,
            "--time-budget-min", str(BUDGET_S / 60), "--encoder-precision", "float32",
            "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert f"not measured: {name} not measured: estimated" in " ".join(printed.split())
    saved = json.loads((tmp_path / "o" / "pick.json").read_text())
    assert "--encoder-precision float32" in saved["command"]
    report = (tmp_path / "o" / "report.md").read_text(encoding="utf-8")
    [entry] = saved["not_measured"]
    assert f"| {name} | {entry['estimated_encode_s'] / 60:.1f} min |" in report
    assert run([*args[:-4], "--encoder-precision", "int4"]) == 2
    assert "unknown 'int4'" in capsys.readouterr().err
