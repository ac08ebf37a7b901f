"""Errors in OpenAI's JSON shape, and the deliberate map from library errors to statuses.

Every response that is not a success has the body
``{"error": {"message": str, "type": str, "param": str | None, "code": str | None}}`` —
FastAPI's validation errors, unknown routes and unexpected exceptions included. The map:

============================================  ======  ===============================
condition                                     status  ``error.code``
============================================  ======  ===============================
malformed JSON body                           400     ``invalid_json``
``InvalidInput`` (blank text, bad filter …)   400     ``invalid_input``
``DimensionMismatch``, ``dimensions`` > dim   400     ``invalid_dimensions``
missing or invalid API key                    401     ``invalid_api_key``
unknown model or reranker                     404     ``model_not_found``
unknown index / document ids / route          404     ``index_not_found`` …
wrong HTTP method                             405     ``method_not_allowed``
``IndexLocked`` (another process writes)      409     ``index_locked`` + ``Retry-After``
body over ``max_body_bytes``                  413     ``body_too_large``
schema violation                              422     ``invalid_request``
a server limit exceeded (inputs, chars, k)    422     ``limit_exceeded``
``IndexCorrupt``, ``ModelMismatch`` …         500     named, without server paths
anything unexpected                           500     ``internal_error`` (generic; logged)
a queue is full                               503     ``overloaded`` + ``Retry-After``
============================================  ======  ===============================
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from embedstack.errors import (
    DimensionMismatch,
    EmbedstackError,
    IndexCorrupt,
    IndexLocked,
    InvalidInput,
    MissingDependency,
    ModelMismatch,
    ModelNotFound,
)

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "ErrorBody",
    "ErrorResponse",
    "error_content",
    "from_library",
    "limit_exceeded",
]

logger = logging.getLogger("embedstack.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "overloaded_error",
}


class ErrorBody(BaseModel):
    """The inner object of an error response."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """An error response, as OpenAI sends them."""

    error: ErrorBody


class ApiError(Exception):
    """An error the server answers on purpose.

    Args:
        status: HTTP status code.
        message: What went wrong and what to do instead; sent to the client.
        code: Machine-readable reason (``error.code``).
        param: The request field at fault, if any (``error.param``).
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_content(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The JSON body of an error response."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def limit_exceeded(message: str, param: str) -> ApiError:
    """A 422 for a request over one of the server's limits (``message`` names the limit)."""
    return ApiError(422, message, code="limit_exceeded", param=param)


def from_library(error: EmbedstackError, *, param: str | None = None) -> ApiError:
    """Translate a library error into the :class:`ApiError` the client sees.

    Errors that reveal a server-side problem (a corrupt index, a missing extra) are logged
    in full and answered with a message that names the problem but not server paths.
    """
    if isinstance(error, DimensionMismatch):
        return ApiError(400, str(error), code="invalid_dimensions", param=param)
    if isinstance(error, InvalidInput):
        return ApiError(400, str(error), code="invalid_input", param=param)
    if isinstance(error, ModelNotFound):
        return ApiError(404, str(error), code="model_not_found", param="model")
    if isinstance(error, IndexLocked):
        return ApiError(
            409,
            "the index is being written by another process; retry later",
            code="index_locked",
            headers={"Retry-After": "1"},
        )
    logger.error("server-side library error: %r", error)
    if isinstance(error, IndexCorrupt):
        return ApiError(500, "the index failed its integrity checks", code="index_corrupt")
    if isinstance(error, ModelMismatch):
        return ApiError(500, "the index was built with another model", code="model_mismatch")
    if isinstance(error, MissingDependency):
        return ApiError(500, "the server lacks an optional dependency", code="missing_dependency")
    return ApiError(500, "internal server error", code="internal_error")


# Documented error responses of every route (so OpenAPI and schemathesis know them).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed JSON, or a value the model or index rejects",
        401: "Missing or invalid API key",
        404: "Unknown model, reranker or index",
        409: "The index is locked by another writer",
        413: "Request body too large",
        422: "Request does not match the schema, or exceeds a limit",
        500: "Server error",
        503: "Overloaded: retry after Retry-After seconds",
    }.items()
}
