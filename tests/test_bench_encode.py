"""The arithmetic and choices of ``benchmarks/encode_throughput.py`` (no model is run).

Ratios and cosines come from ``benchmarks/encode_summary.py``; the sentence-transformers
ONNX peer's int8 config, install check and "cannot run this model" test from
``benchmarks/st_onnx_peer.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import encode_summary  # noqa: E402
import st_onnx_peer  # noqa: E402


def _runs(*rates: float, files: list[str] | None = None) -> list[dict[str, object]]:
    return [
        {"docs_per_s": r, "peak_rss_mib": 100.0 + r, "child_seconds": 600 / r, "files": files or []}
        for r in rates
    ]


def test_ratios_use_medians_and_compare_equal_precision() -> None:
    systems = ["st", "st-onnx-fp32", "st-onnx-int8", "onnx-fp32", "onnx-int8"]
    runs = {
        "st": _runs(10.0, 12.0, 11.0),
        "st-onnx-fp32": _runs(20.0, 14.0, 16.0),
        "st-onnx-int8": _runs(30.0, 30.0, 24.0),
        "onnx-fp32": _runs(18.0, 19.0, 30.0),
        "onnx-int8": _runs(36.0, 33.0, 40.0, files=["model.int8.onnx"]),
    }
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 8)).astype(np.float32)
    vectors = {s: base + 0.01 * i * rng.normal(size=base.shape) for i, s in enumerate(systems)}
    out = encode_summary.summarize(systems, runs, vectors)
    assert out["st"]["ratio_vs_st"] == 1.0
    assert out["onnx-fp32"]["docs_per_s"] == 19.0
    assert out["onnx-fp32"]["ratio_vs_st"] == round(19.0 / 11.0, 3)
    assert out["onnx-fp32"]["ratio_vs_st_onnx_fp32"] == round(19.0 / 16.0, 3)
    assert out["onnx-int8"]["ratio_vs_st_onnx_int8"] == round(36.0 / 30.0, 3)
    assert "ratio_vs_st_onnx_int8" not in out["onnx-fp32"]
    assert out["onnx-int8"]["peak_rss_mib"] == 140.0
    assert out["onnx-int8"]["child_seconds"] == round(600 / 36.0, 1)
    assert out["onnx-int8"]["files"] == ["model.int8.onnx"]
    assert "files" not in out["st"]
    assert "cosine_vs_st" not in out["st"]
    assert out["st-onnx-int8"]["cosine_vs_st_onnx_fp32"] == encode_summary.cosines(
        vectors["st-onnx-int8"], vectors["st-onnx-fp32"]
    )
    assert out["onnx-int8"]["cosine_vs_onnx_fp32"] == encode_summary.cosines(
        vectors["onnx-int8"], vectors["onnx-fp32"]
    )
    assert encode_summary.equal_precision(out) == {
        "onnx-fp32": round(19.0 / 16.0, 3),
        "onnx-int8": round(36.0 / 30.0, 3),
    }


def test_cosines_of_scaled_and_opposite_rows() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    b = np.array([[3.0, 0.0], [0.0, -1.0]], dtype=np.float32)
    assert encode_summary.cosines(a, b) == {"min": -1.0, "mean": 0.0}


def test_without_sentence_transformers_the_reference_is_our_fp32() -> None:
    systems = ["onnx-fp32", "onnx-int8"]
    runs = {"onnx-fp32": _runs(10.0), "onnx-int8": _runs(25.0)}
    vectors = {s: np.eye(3, dtype=np.float32) for s in systems}
    out = encode_summary.summarize(systems, runs, vectors)
    assert "ratio_vs_st" not in out["onnx-int8"]
    assert out["onnx-int8"]["cosine_vs_onnx_fp32"] == {"min": 1.0, "mean": 1.0}
    assert encode_summary.equal_precision(out) == {}


def test_combine_keeps_one_report_and_summarizes_several() -> None:
    one = {"systems": {"onnx-fp32": {"ratio_vs_st": 1.5}}, "equal_precision": {"onnx-fp32": 1.2}}
    assert encode_summary.combine({"m": one}) is one
    two = {"systems": {"onnx-int8": {}}, "equal_precision": {}, "skipped": {"st": "why"}}
    both = encode_summary.combine({"m": one, "n": two})
    assert both["models"] == {"m": one, "n": two}
    assert both["summary"]["m"] == {"equal_precision": {"onnx-fp32": 1.2}, "onnx_fp32_vs_st": 1.5}
    assert both["summary"]["n"] == {"equal_precision": {}, "skipped": ["st"]}


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", "fpu sse avx2 avx512f avx512bw avx512_vnni", "avx512_vnni"),
        ("x86_64", "fpu sse avx2 avx512f avx512bw", "avx512"),
        ("x86_64", "fpu sse avx2 avx512f", "avx2"),
        ("x86_64", "fpu sse avx2", "avx2"),
        ("aarch64", "fp asimd", "arm64"),
    ],
)
def test_int8_config_follows_the_cpu(machine: str, flags: str, expected: str) -> None:
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    config, reason = st_onnx_peer.cpu_quantization(cpuinfo=cpuinfo, machine=machine)
    assert config == expected
    assert reason


def test_install_check_names_what_is_missing(tmp_path: Path) -> None:
    requirements = st_onnx_peer.pinned()
    assert any(r.startswith("optimum-onnx==") for r in requirements)
    for requirement in requirements[1:]:
        name, _, version = requirement.partition("==")
        (tmp_path / f"{name.replace('-', '_')}-{version}.dist-info").mkdir()
    assert st_onnx_peer.missing(tmp_path) == requirements[:1]
    with pytest.raises(SystemExit, match="--install-st-onnx"):
        st_onnx_peer.check(tmp_path)
    name, _, version = requirements[0].partition("==")
    (tmp_path / f"{name.replace('-', '_')}-{version}.dist-info").mkdir()
    st_onnx_peer.check(tmp_path)


def test_peer_env_puts_its_site_first(tmp_path: Path) -> None:
    env = st_onnx_peer.child_env(tmp_path, {"PYTHONPATH": "/a", "X": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/a"]
    assert env["X"] == "1"
    assert st_onnx_peer.child_env(tmp_path, {})["PYTHONPATH"] == str(tmp_path)


def test_models_sentence_transformers_cannot_run_are_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    assert "model.safetensors" in (st_onnx_peer.unsupported(tmp_path, tmp_path) or "")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert st_onnx_peer.unsupported(tmp_path, tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"onnx_only": True}), encoding="utf-8")
    assert "ONNX-only" in (st_onnx_peer.unsupported(tmp_path, tmp_path) or "")
    assert "config.json" in (st_onnx_peer.unsupported(tmp_path / "absent", tmp_path) or "")


def test_install_swaps_in_a_complete_folder_and_is_skipped_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> None:  # writes what pip would
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        for requirement in st_onnx_peer.pinned():
            name, _, version = requirement.partition("==")
            (target / f"{name.replace('-', '_')}-{version}.dist-info").mkdir(parents=True)

    monkeypatch.setattr(st_onnx_peer.subprocess, "run", fake_pip)
    site = tmp_path / "site"
    (site / "stale").mkdir(parents=True)
    st_onnx_peer.install(site)
    assert len(calls) == 1 and "--no-deps" in calls[0]
    assert st_onnx_peer.missing(site) == [] and not (site / "stale").exists()
    st_onnx_peer.install(site)
    assert len(calls) == 1
