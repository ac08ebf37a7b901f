"""A SIGTERM during ``embedstack train embedder`` leaves nothing beside --out (tier 1: a
tiny random BERT, trained in a child process that is stopped mid-run)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from test_train_embedder import WORDS, build_tiny_bert, make_corpus  # noqa: E402

CLI = "import sys; from embedstack.cli import main; sys.argv[0] = 'embedstack'; main()"


def _training_log(parent: Path, name: str) -> Path | None:
    """The work folder's training log once it has a step (the loop is running)."""
    for work in parent.glob(f".{name}.training-*"):
        log = work / "training_log.jsonl"
        if log.is_file() and '"loss"' in log.read_text(encoding="utf-8"):
            return log
    return None


def test_sigterm_mid_training_removes_the_work_folder(tmp_path: Path) -> None:
    data = make_corpus(tmp_path / "data")
    texts = [json.loads(x)["text"] for x in (data / "corpus.jsonl").read_text().splitlines()]
    base = build_tiny_bert(tmp_path / "base", texts + WORDS, positions=64)
    parent = tmp_path / "models"
    parent.mkdir()
    out = parent / "model"
    args = ["train", "embedder", str(data), "--out", str(out), "--base", str(base),
            "--miner", "none", "--epochs", "10000", "--batch-size", "6", "--threads", "1",
            "--log-every", "1", "--dev-fraction", "0",
            "--sts", str(tmp_path / "no-sts.tsv")]  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # generous: a loaded machine imports torch slowly
        while _training_log(parent, out.name) is None:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated" in stderr and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in parent.iterdir()) == []  # no work folder, no half --out
