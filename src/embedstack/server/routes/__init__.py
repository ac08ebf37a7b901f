"""The API routes, one module per area; :func:`embedstack.server.create_app` includes them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Response

__all__ = ["json_response"]

# Payloads with more numbers than this are serialized on a worker thread.
_INLINE_NUMBERS = 50_000


async def json_response(payload: Any, *, numbers: int = 0, status_code: int = 200) -> Response:
    """A JSON response serialized without pydantic (fast for long float lists).

    Args:
        payload: JSON-ready data (already checked against the response model's shape by
            the code that built it).
        numbers: How many numbers it holds, roughly; big payloads are serialized off the
            event loop.
        status_code: HTTP status.
    """
    if numbers > _INLINE_NUMBERS:
        body = await asyncio.to_thread(_dumps, payload)
    else:
        body = _dumps(payload)
    return Response(body, status_code=status_code, media_type="application/json")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
