"""Exception handlers: every error the app answers has OpenAI's JSON error shape.

Installed by :func:`install_handlers`; the catch-all for unexpected exceptions lives in
:class:`~embedstack.server.middleware.Guard`, which logs the traceback once and answers a
generic 500 without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from embedstack.errors import EmbedstackError
from embedstack.server.batching import Overloaded
from embedstack.server.errors import ApiError, error_content, from_library

__all__ = ["error_response", "install_handlers"]

_MAX_LISTED = 3


def error_response(error: ApiError) -> JSONResponse:
    """The JSON response of ``error``."""
    return JSONResponse(
        error_content(error.status, error.message, error.code, error.param),
        status_code=error.status,
        headers=error.headers,
    )


def _param(loc: Sequence[Any]) -> str | None:
    """``("body", "documents", 3, "text")`` → ``"documents[3].text"``."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "path", "query") else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def _validation_error(errors: Sequence[Any]) -> ApiError:
    first: dict[str, Any] = dict(errors[0]) if errors else {"type": "", "loc": ()}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "JSON decode error")
        position = first["loc"][-1] if first.get("loc") else "?"
        return ApiError(
            400,
            f"the request body is not valid JSON ({detail} at character {position}); send "
            "a JSON object with Content-Type: application/json",
            code="invalid_json",
        )
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return ApiError(
            422,
            "the request needs a JSON body (Content-Type: application/json); see /docs",
            code="invalid_request",
        )
    parts = []
    for error in errors[:_MAX_LISTED]:
        where = _param(error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid value')}")
    more = f" (and {len(errors) - _MAX_LISTED} more)" if len(errors) > _MAX_LISTED else ""
    return ApiError(
        422,
        "; ".join(parts) + more,
        code="invalid_request",
        param=_param(first.get("loc", ())),
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match is not Match.NONE and route_methods:
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every expected error into OpenAI's error shape.

    Each handler narrows `exc` with an `if`, not an `assert`, so the narrowing survives
    `python -O`; an exception of another type is re-raised untouched.
    """

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, ApiError):
            raise exc
        return error_response(exc)

    async def library_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, EmbedstackError):
            raise exc
        return error_response(from_library(exc))

    async def overloaded(request: Request, exc: Exception) -> JSONResponse:
        retry = str(request.app.state.embedstack.settings.retry_after_s)
        return error_response(
            ApiError(
                503,
                f"the server is overloaded ({exc}); retry after {retry} s",
                code="overloaded",
                headers={"Retry-After": retry},
            )
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, RequestValidationError):
            raise exc
        return error_response(_validation_error(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, HTTPException):
            raise exc
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
            return error_response(ApiError(404, message, code="not_found", headers=headers))
        if exc.status_code == 405:
            allowed = _allowed_methods(request) or headers.get("allow", "")
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["Allow"] = allowed
            message = f"{request.method} is not allowed on {request.url.path}"
            message += f"; allowed: {allowed}" if allowed else ""
            return error_response(
                ApiError(405, message, code="method_not_allowed", headers=headers)
            )
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8 JSON)
            message = f"{exc.detail}: send UTF-8 JSON with Content-Type: application/json"
            return error_response(ApiError(400, message, code="invalid_json", headers=headers))
        return error_response(ApiError(exc.status_code, str(exc.detail), headers=headers))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(EmbedstackError, library_error)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
