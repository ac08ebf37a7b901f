"""Prices for ``embedstack pick``'s cost columns: a documented JSON file.

The built-in file (``default_prices.json`` next to this module) states where each number
comes from and its date; every number in it is an assumption (a public list price, no
discounts). ``--price-file`` replaces it with a file of the same shape:

.. code-block:: json

    {"cpu_usd_per_hour": 0.0446, "storage_usd_per_gb_month": 0.08,
     "api": [{"name": "text-embedding-3-small", "usd_per_1m_tokens": 0.02, "source": "..."}],
     "notes": ["..."]}

``cpu_usd_per_hour`` is the price of one CPU (vCPU) for an hour, since query cost is
measured in CPU-seconds. ``api`` and ``notes`` may be omitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput

__all__ = ["DEFAULT_PRICE_FILE", "ApiPrice", "Prices", "load_prices"]

DEFAULT_PRICE_FILE = Path(__file__).with_name("default_prices.json")


@dataclass(frozen=True)
class ApiPrice:
    """A hosted embedding API's price, the "self-host vs API" comparison line."""

    name: str
    usd_per_1m_tokens: float
    source: str = ""


@dataclass(frozen=True)
class Prices:
    """Prices and where they come from.

    Attributes:
        source_file: ``"builtin"`` or the path of the price file read.
        cpu_usd_per_hour: $ per CPU-hour.
        storage_usd_per_gb_month: $ per GB (1e9 bytes) of index per month.
        api: hosted API prices.
        notes: how the prices are used and where they come from.
    """

    source_file: str
    cpu_usd_per_hour: float
    storage_usd_per_gb_month: float
    api: tuple[ApiPrice, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def usd_per_1m_queries(self, cpu_seconds_per_query: float) -> float:
        """$ for a million queries at ``cpu_seconds_per_query``."""
        return cpu_seconds_per_query * self.cpu_usd_per_hour / 3600.0 * 1e6

    def storage_usd_per_month(self, total_bytes: float) -> float:
        """$ per month to store ``total_bytes`` of index."""
        return total_bytes / 1e9 * self.storage_usd_per_gb_month


def _price(raw: dict[str, Any], key: str, where: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{where}: {key!r} must be a number (got {value!r})")
    if value < 0:
        raise InvalidInput(f"{where}: {key!r} must be >= 0, got {value}")
    return float(value)


def load_prices(path: str | Path | None = None) -> Prices:
    """Read a price file, or the built-in one when ``path`` is None.

    Raises:
        InvalidInput: the file is missing, not JSON, or a price is not a non-negative number.

    Example:
        >>> prices = load_prices()
        >>> prices.source_file, [a.usd_per_1m_tokens for a in prices.api]
        ('builtin', [0.02, 0.13])
    """
    file = DEFAULT_PRICE_FILE if path is None else Path(path)
    where = str(file)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"--price-file {file}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"--price-file {file}: not a readable JSON file ({exc})") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: expected a JSON object with cpu_usd_per_hour, ...")
    api_raw = raw.get("api", [])
    if not isinstance(api_raw, list):
        raise InvalidInput(f"{where}: 'api' must be a list of {{name, usd_per_1m_tokens}}")
    api = []
    for item in api_raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"{where}: each 'api' entry needs a 'name' and a price")
        api.append(
            ApiPrice(
                item["name"], _price(item, "usd_per_1m_tokens", where), str(item.get("source", ""))
            )
        )
    notes = [str(n) for n in raw.get("notes", []) if isinstance(n, str)]
    for key in ("assumption", "cpu_source", "storage_source"):
        if isinstance(raw.get(key), str):
            notes.append(f"{key.replace('_', ' ')}: {raw[key]}")
    return Prices(
        source_file="builtin" if path is None else str(file),
        cpu_usd_per_hour=_price(raw, "cpu_usd_per_hour", where),
        storage_usd_per_gb_month=_price(raw, "storage_usd_per_gb_month", where),
        api=tuple(api),
        notes=tuple(notes),
    )
