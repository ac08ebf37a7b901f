"""Pipeline configuration: validation (errors name the field), compact form, JSON, presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedstack.errors import InvalidInput
from embedstack.pipeline import (
    PRESETS,
    Bm25,
    Colbert,
    Dense,
    DenseRescore,
    Pipeline,
    PipelineConfig,
    Rerank,
    Rrf,
    Weighted,
    get_preset,
    list_presets,
    parse_pipeline,
    resolve_pipeline,
)

EXAMPLE = "bm25(top=100) + dense(top=100) -> rrf(k=60) -> rerank(cross_encoder, top=20) -> top 10"


class Reverse:
    """A fake reranker that scores each document by its input position (reverses)."""

    name = "reverse"

    def score(self, query: str, documents: list[str]) -> np.ndarray:
        return np.arange(len(documents), dtype=np.float32)


def test_compact_form_parses_to_the_objects() -> None:
    cfg = parse_pipeline(EXAMPLE)
    assert cfg == PipelineConfig(
        generators=[Bm25(top=100), Dense(top=100)], fusion=Rrf(k=60), stages=[Rerank(top=20)], k=10
    )
    assert cfg.depth == 20 and cfg.final_k == 10


@pytest.mark.parametrize(
    "text",
    [
        EXAMPLE,
        "bm25(top=100) -> dense_rescore(top=20) -> rerank(top=5) -> top 5",
        "dense(50) + bm25(40) -> weighted(alpha=0.3, normalization=zscore) -> top 7",
        'bm25 -> rerank("/models/my reranker", top=20) -> colbert(top=10) -> k=3',
        "sparse(top=30) -> top 30",
    ],
)
def test_round_trips(text: str, tmp_path: Path) -> None:
    cfg = parse_pipeline(text)
    assert parse_pipeline(cfg.to_string()) == cfg
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    file = tmp_path / "p.json"
    file.write_text(json.dumps(cfg.to_dict()))
    assert resolve_pipeline(str(file)) == ("p", cfg)
    assert resolve_pipeline(file) == ("p", cfg)


def test_positional_arguments() -> None:
    cfg = parse_pipeline("bm25(7) + dense -> weighted(0.25) -> rerank(my-model, 4)")
    assert [g.top for g in cfg.generators] == [7, 100]
    assert cfg.fusion == Weighted(alpha=0.25)
    assert cfg.stages == (Rerank(model="my-model", top=4),)
    assert cfg.k is None and cfg.final_k == 4  # no final k: 10, or fewer if the list is shorter
    assert parse_pipeline("bm25 -> top 4").final_k == 4 == parse_pipeline("bm25 -> k=4").k
    assert parse_pipeline("bm25").final_k == 10


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ("bm25(top=0)", "generators.0.top", "greater than 0"),
        ("bm25(top=-5)", "generators.0.top", "greater than 0"),
        ('bm25(top="x")', "generators.0.top", "integer"),
        ("bm25(top=2.5)", "generators.0.top", "integer"),
        ("bm25(tops=3)", "generators.0.tops", "Extra inputs"),
        ("bm25 -> rerank(top=101)", "stages.0.top", "at most 100 come from bm25"),
        ("bm25 + dense -> rrf -> rerank(top=201)", "stages.0.top", "at most 200 come from rrf"),
        ("bm25 -> dense_rescore(top=20) -> rerank(top=30)", "stages.1.top", "from dense_rescore"),
        ("bm25 -> rrf", "fusion", "there is one"),
        ("bm25 + dense", "fusion", "need a fusion"),
        ("bm25 + bm25 -> rrf", "generators.1.kind", "already generators.0"),
        ("bm25 + dense + sparse -> weighted", "fusion", "exactly two"),
        ("bm25 + dense -> rrf(k=0)", "fusion.k", "greater than 0"),
        ("bm25 + dense -> weighted(alpha=1.5)", "fusion.alpha", "less than or equal to 1"),
        ("bm25 + dense -> weighted(normalization=l2)", "fusion.normalization", "minmax"),
        ("bm25(top=5) -> top 10", "k", "at most 5 come from bm25"),
        ("bm25 -> rerank(top=5) -> top 6", "k", "at most 5 come from rerank"),
        ({"generators": []}, "generators", "at least one"),
        ({}, "generators", "Field required"),
        ({"generators": [{"kind": "bm25"}], "stage": []}, "stage", "Extra inputs"),
        ({"generators": [{"kind": "bm26"}]}, "generators.0", "'bm25', 'dense', 'sparse'"),
        ({"generators": [{"top": 3}]}, "generators.0", "missing 'kind'"),
        (
            {"generators": [{"kind": "bm25"}], "stages": [{"kind": "cross", "top": 3}]},
            "stages.0",
            "'dense_rescore', 'rerank', 'colbert'",
        ),
        (
            {"generators": [{"kind": "bm25"}], "stages": [{"kind": "rerank", "top": True}]},
            "stages.0.top",
            "integer",
        ),
        (
            {"generators": [{"kind": "bm25"}], "stages": [{"kind": "rerank", "model": " "}]},
            "stages.0.model",
            "pattern",
        ),
        ({"generators": [{"kind": "bm25"}], "k": 0}, "k", "greater than 0"),
    ],
)
def test_invalid_configs_name_the_field(
    spec: str | dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_pipeline(spec) if isinstance(spec, str) else PipelineConfig.from_dict(spec)
    message = str(err.value)
    assert f"{field}: " in message and words in message, message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("bm25 -> frob(top=3)", "unknown stage 'frob'"),
        ("rerank(top=3)", "starts with generators"),
        ("bm25 -> top 3 -> rerank", "must come last"),
        ("bm25 -> rerank -> rrf", "only follow the generators"),
        ("bm25(top=3, top=4)", "given twice"),
        ("bm25((", "expected a value"),
        ("bm25 dense", "expected '->' or '+'"),
        ("dense_rescore(5)", "starts with generators"),
        ("bm25(nonsense)", "use name=value"),
        ("   ", "empty"),
    ],
)
def test_syntax_errors_point_at_the_column(text: str, words: str) -> None:
    with pytest.raises(InvalidInput, match="pipeline string") as err:
        parse_pipeline(text)
    assert words in str(err.value)


def test_direct_construction_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="top: Input should be greater than 0"):
        Bm25(top=0)
    with pytest.raises(InvalidInput, match="fusion: 2 generators need a fusion"):
        PipelineConfig(generators=[Bm25(), Dense()])
    cfg = PipelineConfig(generators=[Bm25()])
    with pytest.raises(ValueError):  # frozen
        cfg.k = 3  # type: ignore[misc]


def test_presets() -> None:
    assert list(list_presets()) == [
        "bm25", "dense", "hybrid", "hybrid-rerank", "three-stage", "hybrid-colbert",
        "three-stage-colbert",
    ]  # fmt: skip
    assert get_preset("bm25") == PipelineConfig(generators=[Bm25(top=100)], k=10)
    assert get_preset("dense") == PipelineConfig(generators=[Dense(top=100)], k=10)
    hybrid = PipelineConfig(generators=[Bm25(top=100), Dense(top=100)], fusion=Rrf(k=60), k=10)
    assert get_preset("hybrid") == hybrid
    assert get_preset("hybrid-rerank") == hybrid.model_copy(update={"stages": (Rerank(top=50),)})
    assert get_preset("hybrid-colbert") == hybrid.model_copy(update={"stages": (Colbert(top=50),)})
    three = get_preset("three-stage")
    assert three.generators == (Bm25(top=100),) and three.fusion is None
    assert three.stages == (DenseRescore(top=100), Rerank(top=20))
    assert get_preset("three-stage", k=5).k == 5
    colbert3 = get_preset("three-stage-colbert")
    assert colbert3.generators == three.generators and colbert3.fusion is None
    assert colbert3.stages == (DenseRescore(top=100), Colbert(top=20))
    with pytest.raises(InvalidInput, match="k: 21 results asked but at most 20 come from rerank"):
        get_preset("three-stage", k=21)
    with pytest.raises(InvalidInput, match="unknown preset 'hybird'; presets: bm25, dense"):
        get_preset("hybird")
    for name in PRESETS:
        assert resolve_pipeline(name) == (name, get_preset(name))


def test_unknown_name_lists_the_presets() -> None:
    with pytest.raises(InvalidInput, match="unknown pipeline 'fancy'.*hybrid-rerank"):
        resolve_pipeline("fancy")
    with pytest.raises(InvalidInput, match="does not exist"):
        resolve_pipeline("missing.json")
    with pytest.raises(InvalidInput, match="got int"):
        resolve_pipeline(3)  # type: ignore[arg-type]


def test_bad_json_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInput, match=r"bad\.json is not valid JSON: .* line 1"):
        resolve_pipeline(bad)
    bad.write_text(json.dumps({"generators": [{"kind": "bm25", "top": 0}]}))
    with pytest.raises(InvalidInput, match=r"bad\.json: generators\.0\.top"):
        resolve_pipeline(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        resolve_pipeline(bad)


@pytest.mark.parametrize("name", ["hybrid-rerank", "three-stage"])
def test_rerank_preset_without_reranker_says_how_to_get_one(name: str) -> None:
    with pytest.raises(InvalidInput) as err:
        Pipeline(name)
    message = str(err.value)
    assert "has no cross-encoder" in message and "--reranker DIR_OR_NAME" in message
    assert "embedstack train reranker DATASET_DIR --split train --out DIR" in message
    assert Pipeline(name, reranker=Reverse()).models == {"rerank": "reverse"}


def test_colbert_stage_without_a_model_reads_the_index() -> None:
    # No model: the stage scores the index's stored token vectors (checked when it runs,
    # tests/test_pipeline_run.py), so building the pipeline needs no model.
    assert Pipeline("bm25 -> colbert(top=10) -> top 5").models == {"colbert": "colbert:index"}


def test_reranker_object_must_score() -> None:
    with pytest.raises(InvalidInput, match="reranker must be a model name or folder, or an obj"):
        Pipeline("three-stage", reranker=object())  # type: ignore[arg-type]


def test_one_loaded_model_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[tuple[str, dict[str, object]]] = []

    def fake_load(value: str, options: dict[str, object]) -> Reverse:
        loaded.append((value, options))
        return Reverse()

    monkeypatch.setattr("embedstack.pipeline.run._load_reranker", fake_load)
    p = Pipeline(
        "bm25 -> rerank(m1, top=50) -> rerank(m1, top=20) -> rerank(m2, top=10)",
        reranker_options={"threads": 2},
    )
    assert loaded == [("m1", {"threads": 2}), ("m2", {"threads": 2})]
    assert p.labels == ["bm25", "rerank", "rerank_2", "rerank_3"]
    Pipeline("bm25 -> rerank(m1, top=50)", reranker="override")
    assert loaded[-1][0] == "override"
