"""The outermost layer of the app (inside CORS): authentication, body limit, metrics, and
the catch-all for unexpected errors — a plain ASGI middleware, so it runs before FastAPI
reads or parses anything.

For each HTTP request, in order:

1. **API key** (paths under ``/v1/`` when keys are configured): the ``Authorization:
   Bearer KEY`` header is compared with every configured key by ``hmac.compare_digest``;
   missing or wrong → 401 before the body is read.
2. **Body size**: a ``Content-Length`` over ``max_body_bytes`` → 413 without reading the
   body; a body streamed without (or beyond) its announced length is counted while read
   and refused with 413 as soon as it passes the limit. The body is then replayed to the
   app, which therefore never sees more than the limit.
3. **Catch-all**: an exception that no handler answered is logged with its traceback and
   answered with a generic 500 in OpenAI's error shape (no stack trace in the response).
4. **Metrics**: every request is counted by route template, method and status, and its
   latency observed.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Sequence
from re import Pattern

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedstack.server.errors import ApiError, error_content
from embedstack.server.metrics import Metrics
from embedstack.server.settings import ServerSettings

__all__ = ["Guard", "check_bearer"]

logger = logging.getLogger("embedstack.server")

_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_bearer(header: bytes | None, keys: tuple[bytes, ...]) -> ApiError | None:
    """None when ``header`` (the raw ``Authorization`` value) carries one of ``keys``.

    Every key is compared (constant time, no early exit), so the answer time does not
    tell which key, or how much of one, matched.
    """
    if not keys:
        return None
    if not header:
        return ApiError(
            401,
            "missing API key: send the header 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = header.partition(b" ")
    token = token.strip()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    if scheme.lower() != b"bearer" or not token or not matched:
        return ApiError(
            401,
            "invalid API key: send one of the server's keys as 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return None


class Guard:
    """See the module docstring.

    Args:
        app: The wrapped ASGI app (FastAPI's middleware stack).
        settings: Keys and the body limit.
        metrics: Where requests are counted.
        routes: The app's routes, to label requests by route template (also those
            answered here, before routing).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ServerSettings,
        metrics: Callable[[], Metrics],
        routes: Sequence[BaseRoute],
    ) -> None:
        self.app = app
        self.keys = settings.key_bytes()
        self.max_body = settings.max_body_bytes
        self.metrics = metrics
        self.templates: list[tuple[Pattern[str], str]] = [
            (route.path_regex, route.path) for route in routes if isinstance(route, Route)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            error = self._authenticate(scope)
            if error is None:
                body, error = await self._read_body(scope, receive)
            if error is not None:
                await _send_error(send_tracked, error)
            else:
                await self.app(scope, _replay(body, receive), send_tracked)
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # the response is half sent: let the server drop the connection
            await _send_error(
                send_tracked, ApiError(500, "internal server error", code="internal_error")
            )
        finally:
            elapsed = time.perf_counter() - start
            self.metrics().request(self._route(scope), scope.get("method", ""), status, elapsed)

    def _authenticate(self, scope: Scope) -> ApiError | None:
        path: str = scope.get("path", "")
        if not self.keys or not (path == "/v1" or path.startswith("/v1/")):
            return None
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
        return check_bearer(header, self.keys)

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes | None, ApiError | None]:
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                announced = int(length)
            except ValueError:
                return None, ApiError(400, "invalid Content-Length header", code="invalid_request")
            if announced > self.max_body:
                return None, self._too_large(announced)
        elif scope.get("method") in _BODYLESS and b"transfer-encoding" not in headers:
            return None, None  # nothing to read: pass receive through
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, None  # client went away; the app sees the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None, self._too_large(size, streamed=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    def _too_large(self, size: int, *, streamed: bool = False) -> ApiError:
        what = f"more than {size - 1}" if streamed else str(size)
        return ApiError(
            413,
            f"the request body has {what} bytes; the limit is {self.max_body} bytes "
            "(max_body_bytes): send fewer or shorter inputs per request",
            code="body_too_large",
        )

    def _route(self, scope: Scope) -> str:
        """The route template of the request (bounded label cardinality)."""
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        requested = scope.get("path", "")
        for regex, template in self.templates:
            if regex.match(requested):
                return str(template)
        return "unmatched"


def _replay(body: bytes | None, receive: Receive) -> Receive:
    if body is None:
        return receive
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # only a disconnect can come now

    return replay


async def _send_error(send: Send, error: ApiError) -> None:
    payload = error_content(error.status, error.message, error.code, error.param)
    body = json.dumps(payload).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    for key, value in error.headers.items():
        headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
