"""Durable file writes shared by the converters (JSON written, flushed and fsynced)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json"]


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented UTF-8 JSON to ``path`` and fsync it."""
    with path.open("w", encoding="utf-8") as out:
        json.dump(value, out, indent=2, ensure_ascii=False)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
