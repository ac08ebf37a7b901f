"""Trainers' outputs appear whole or not at all (:mod:`embedstack.train.staging`)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedstack.errors import InvalidInput
from embedstack.train.config import RerankerConfig
from embedstack.train.staging import staged, sweep_stale

KIND = "a test folder"


@dataclasses.dataclass(frozen=True)
class Result:
    out: Path
    steps: int


def _train(work: RerankerConfig) -> Result:
    (work.out / "weights.bin").write_bytes(b"new")
    (work.out / "training_args.json").write_text(json.dumps({"out": str(work.out)}))
    return Result(work.out, 3)


def _cfg(out: Path, **options: object) -> RerankerConfig:
    return RerankerConfig(dataset_dir="data", out=out, **options)  # type: ignore[arg-type]


def test_the_folder_appears_whole_and_the_record_names_it(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "model"
    result = staged(_cfg(out), KIND, _train)
    assert result == Result(out, 3)
    assert (out / "weights.bin").read_bytes() == b"new"
    assert json.loads((out / "training_args.json").read_text())["out"] == str(out)
    assert [p.name for p in out.parent.iterdir()] == ["model"]


def test_a_failure_keeps_the_earlier_model(tmp_path: Path) -> None:
    out = tmp_path / "model"
    staged(_cfg(out), KIND, _train)

    def failing(work: RerankerConfig) -> Result:
        assert work.out != out and work.out.parent == tmp_path and not any(work.out.iterdir())
        (work.out / "weights.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        staged(_cfg(out, overwrite=True), KIND, failing)
    assert (out / "weights.bin").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_out_is_checked_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    calls = []
    with pytest.raises(InvalidInput, match="not empty; pass overwrite=True"):
        staged(_cfg(out), KIND, calls.append)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=f"is not {KIND}; refusing to overwrite it"):
        staged(_cfg(out, overwrite=True), KIND, calls.append)  # type: ignore[arg-type]
    assert calls == [] and (out / "notes.txt").read_text() == "mine"


def test_only_the_folders_of_dead_runs_are_swept(tmp_path: Path) -> None:
    never = int(Path("/proc/sys/kernel/pid_max").read_text()) if Path("/proc").is_dir() else 2**22
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".model.training-{never}"  # pids stay below pid_max
        running = tmp_path / f".model.training-{alive.pid}"
        other = tmp_path / f".other.training-{never}"
        for folder in (dead, running, other):
            folder.mkdir()
        assert sweep_stale(tmp_path / "model") == [dead]
        assert running.is_dir() and other.is_dir() and not dead.exists()
    finally:
        alive.kill()
        alive.wait()
