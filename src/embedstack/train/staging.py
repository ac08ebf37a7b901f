"""Every trainer's output appears whole or not at all.

A run trains into a work folder beside ``out`` (``.OUT.training-PID``) and renames it onto
``out`` at the end, so a failed run leaves ``out`` as it was (an earlier model included, when
``overwrite`` replaces one), and a half-trained folder is never mistaken for a model. A run
killed outright (SIGKILL, a library caller's SIGTERM) leaves its work folder; the next run
into the same place removes it once that process is gone.

Example:
    >>> staged(cfg, KIND, lambda work: train(work))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from embedstack.errors import InvalidInput
from embedstack.train.config import TrainConfig

__all__ = ["check_out", "staged", "sweep_stale"]

logger = logging.getLogger("embedstack")

C = TypeVar("C", bound=TrainConfig)
R = TypeVar("R")
ARGS_FILE = "training_args.json"


def check_out(out: Path, overwrite: bool, kind: str) -> None:
    """Refuse a non-empty ``out`` before any work, and with ``overwrite`` anything that is not
    an earlier training's output (a folder with ``training_args.json``)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise InvalidInput(f"{out} exists and is not empty; pass overwrite=True (--overwrite)")
        if not (out / ARGS_FILE).is_file():
            raise InvalidInput(f"{out} is not {kind}; refusing to overwrite it")


def sweep_stale(out: Path) -> list[Path]:
    """Remove the work folders of ``out`` whose process is gone; a live process's folder
    (another run in progress) is left alone. Returns the folders removed."""
    removed = []
    for folder in out.parent.glob(f".{glob.escape(out.name)}.training-*"):
        pid = folder.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except (PermissionError, OverflowError):  # alive (another user's), or no such pid
            continue
    return removed


def staged(cfg: C, kind: str, train: Callable[[C], R]) -> R:
    """Run ``train`` on ``cfg`` with ``out`` replaced by a fresh, empty work folder, then rename the
    folder onto ``cfg.out`` (replacing an earlier training's output only now). The record
    (``training_args.json``) names ``cfg.out``, and so does a result with an ``out`` field.

    Raises:
        InvalidInput: ``cfg.out`` is not empty (without ``overwrite``) or not a training's
            output; whatever ``train`` raises, with nothing left behind.
    """
    check_out(cfg.out, cfg.overwrite, kind)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    work = cfg.out.parent / f".{cfg.out.name}.training-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for stale in sweep_stale(cfg.out):
        logger.info("removed %s, left by a training run that was killed", stale)
    try:
        result = train(dataclasses.replace(cfg, out=work, overwrite=True))
        _name_final(work / ARGS_FILE, cfg.out)
        if cfg.out.exists():
            shutil.rmtree(cfg.out) if cfg.out.is_dir() else cfg.out.unlink()
        os.replace(work, cfg.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if dataclasses.is_dataclass(result) and hasattr(result, "out"):
        return dataclasses.replace(result, out=cfg.out)  # type: ignore[type-var]
    return result


def _name_final(record: Path, out: Path) -> None:
    """Point the record's ``out`` (and its result's) at the final folder."""
    if not record.is_file():
        return
    args: dict[str, Any] = json.loads(record.read_text("utf-8"))
    args["out"] = os.fspath(out)
    if isinstance(args.get("result"), dict) and "out" in args["result"]:
        args["result"]["out"] = os.fspath(out)
    record.write_text(json.dumps(args, indent=2) + "\n", "utf-8")
