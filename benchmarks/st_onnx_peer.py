"""sentence-transformers' own ONNX backend as an encode peer (``st-onnx-fp32``, ``st-onnx-int8``).

The peer is what sentence-transformers documents under "Speeding up Inference" (sbert.net,
``docs/sentence_transformer/usage/efficiency.html``), called exactly as a user would:

* export, once per model, into a temporary *copy* of the model folder (the model cache and
  the installed packages are never written to)::

      model = SentenceTransformer(copy, backend="onnx", device="cpu")  # optimum's ONNX export
      export_optimized_onnx_model(model, "O3", copy)              # -> onnx/model_O3.onnx
      export_dynamic_quantized_onnx_model(model, CONFIG, copy)    # -> onnx/model_<q>_<CONFIG>.onnx

  with ``CONFIG`` the dynamic int8 configuration sentence-transformers offers for this CPU
  (``arm64``, ``avx2``, ``avx512`` or ``avx512_vnni``; :func:`cpu_quantization` reads
  ``/proc/cpuinfo``). Like sentence-transformers, the int8 file is quantized from the plain
  export, not from the O3 one.
* load each file for timing::

      SentenceTransformer(copy, backend="onnx", device="cpu",
                          model_kwargs={"file_name": FILE, "provider": "CPUExecutionProvider",
                                        "session_options": OPTIONS})

  where ``OPTIONS`` gives ONNX Runtime the same ``threads`` intra-op threads and one inter-op
  thread as embedstack's sessions (spinning left at its default, as in ours), and encode with
  sentence-transformers' defaults (``batch_size=32``, ``normalize_embeddings=True``).

sentence-transformers' ``onnx`` extra needs ``optimum-onnx``, whose only release (0.1.0) pins
``transformers<4.58`` while sentence-transformers 6.x needs ``transformers>=5``: the two cannot
share the project's ``.venv``. The peer therefore runs from its own folder of pure-Python
packages (``st_onnx_requirements.txt``: sentence-transformers 5.7.0, the newest release that
accepts transformers 4.x, with optimum-onnx 0.1.0), installed with ``pip install --no-deps
--target`` and put in front of ``sys.path`` for the peer's child processes only; torch, ONNX
Runtime, numpy, safetensors and the rest come from ``.venv`` as for every other system.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = Path(__file__).with_name("st_onnx_requirements.txt")
DEFAULT_SITE = ROOT / ".cache" / "st-onnx-site"
LEVEL = "O3"
QUANTIZATIONS = ("arm64", "avx2", "avx512", "avx512_vnni")
ST_BATCH_SIZE = 32  # sentence-transformers' default encode batch size
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def pinned() -> list[str]:
    """The ``name==version`` lines of :data:`REQUIREMENTS`."""
    lines = REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def install_command(site: Path) -> list[str]:
    """The pip command that installs the peer's packages into ``site``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--target",
        str(site),
        "-r",
        str(REQUIREMENTS),
    ]


def missing(site: Path) -> list[str]:
    """Pinned requirements with no matching ``.dist-info`` in ``site``."""
    present = {d.name.lower() for d in site.glob("*.dist-info")}
    absent = []
    for requirement in pinned():
        name, _, version = requirement.partition("==")
        if f"{name.replace('-', '_')}-{version}.dist-info".lower() not in present:
            absent.append(requirement)
    return absent


def install(site: Path) -> None:
    """Install the pinned packages into ``site`` (a fresh folder, swapped in at the end);
    nothing to do when every pinned version is already there."""
    if site.is_dir() and not missing(site):
        return
    staging = site.with_name(site.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(install_command(staging), check=True)
    shutil.rmtree(site, ignore_errors=True)
    staging.rename(site)


def check(site: Path) -> None:
    """Exit with the install command when ``site`` lacks a pinned package."""
    absent = missing(site)
    if absent:
        command = " ".join(install_command(site))
        raise SystemExit(
            f"sentence-transformers' ONNX peer is not installed in {site} (missing: "
            f"{', '.join(absent)}).\nRun the benchmark once with --install-st-onnx, or: "
            f"{command}\n(or pass --no-st-onnx to time without it)"
        )


def child_env(site: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``site`` first on ``PYTHONPATH``, so its packages shadow ``.venv``'s."""
    rest = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": str(site) + (os.pathsep + rest if rest else "")}


def cpu_quantization(cpuinfo: str | None = None, machine: str | None = None) -> tuple[str, str]:
    """The sentence-transformers dynamic int8 config for this CPU, and why.

    ``avx512_vnni`` where the CPU has VNNI, else ``avx512`` with AVX-512 (F and BW), else
    ``avx2``; ``arm64`` on ARM. ``cpuinfo`` and ``machine`` default to ``/proc/cpuinfo``
    and :func:`platform.machine`.
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64", f"machine {machine}"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    if "avx512_vnni" in flags:
        return "avx512_vnni", "cpu flag avx512_vnni"
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512", "cpu flags avx512f+avx512bw, no avx512_vnni"
    if "avx2" in flags:
        return "avx2", "cpu flag avx2, no avx512f/avx512_vnni"
    return "avx2", "no avx2/avx512 flag found in /proc/cpuinfo; avx2 is the closest config"


def unsupported(folder: Path, weights_folder: Path) -> str | None:
    """Why sentence-transformers cannot run the model in ``folder``, or None if it can."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{folder} has no readable config.json"
    if config.get("onnx_only"):
        return (
            "ONNX-only folder (a pooled graph, no weights for torch): sentence-transformers "
            "can neither load nor export it"
        )
    if not any((weights_folder / name).is_file() for name in WEIGHTS):
        return f"no {' or '.join(WEIGHTS)} in {weights_folder}"
    return None


def versions() -> dict[str, str]:
    """Versions of the packages the peer runs on (from wherever they are imported)."""
    names = (
        "sentence-transformers",
        "transformers",
        "optimum-onnx",
        "optimum",
        "onnxruntime",
        "torch",
        "huggingface_hub",
        "tokenizers",
    )
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _describe(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {
        "file": name,
        "mib": round(path.stat().st_size / 2**20, 1),
        "sha256": digest.hexdigest(),
    }


def export(folder: Path, work: Path, quantization: str, threads: int) -> dict[str, Any]:
    """Copy ``folder`` into ``work/model`` and export its O3 and dynamic int8 ONNX files
    there with sentence-transformers' functions (run in a child with the peer's packages).

    Returns:
        The copy's path, the fp32 and int8 files (relative to it, with size and SHA-256),
        the quantization config, the export time and the package versions.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import (
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    torch.set_num_threads(threads)
    copy = work / "model"
    # Every ONNX file is made here from the weights, never taken from the folder.
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("onnx", "openvino", "*.onnx"))
    start = time.perf_counter()
    model = SentenceTransformer(str(copy), backend="onnx", device="cpu")
    export_optimized_onnx_model(model, LEVEL, str(copy))
    before = {p.name for p in (copy / "onnx").glob("*.onnx")}
    export_dynamic_quantized_onnx_model(model, quantization, str(copy))
    seconds = time.perf_counter() - start
    new = sorted({p.name for p in (copy / "onnx").glob("*.onnx")} - before)
    if len(new) != 1 or f"model_{LEVEL}.onnx" not in before:
        raise SystemExit(f"unexpected export files: O3 {sorted(before)}, int8 {new}")
    return {
        "folder": str(copy),
        "fp32": _describe(copy, f"onnx/model_{LEVEL}.onnx"),
        "int8": _describe(copy, f"onnx/{new[0]}"),
        "optimization_level": LEVEL,
        "quantization_config": quantization,
        "export_seconds": round(seconds, 1),
        "versions": versions(),
    }


def load(copy: str, file_name: str, threads: int, max_length: int) -> Any:
    """sentence-transformers over ``copy``'s ``file_name`` with ``threads`` ORT threads."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    kwargs = {
        "file_name": file_name,
        "provider": "CPUExecutionProvider",
        "session_options": options,
    }
    model = SentenceTransformer(copy, backend="onnx", device="cpu", model_kwargs=kwargs)
    model.max_seq_length = max_length
    return model
