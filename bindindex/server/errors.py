"""JSON error bodies: ``{"error": {"code": ..., "message": ...}}`` for every failed request."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bindindex.errors import (
    BindIndexError,
    IndexBusyError,
    IndexStateError,
    MediaError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    UsageError,
)

log = logging.getLogger(__name__)

# Checked in order, so a subclass comes before its base class.
_STATUS: list[tuple[type[BindIndexError], int, str]] = [
    (NotFoundError, 404, "not_found"),
    (UsageError, 400, "invalid_request"),
    (MediaError, 422, "undecodable_media"),
    (IndexBusyError, 409, "index_busy"),
    (ModelMismatchError, 409, "model_mismatch"),
    (IndexStateError, 409, "index_unusable"),
    (ModelError, 503, "model_unavailable"),
]


# Error codes of the HTTPExceptions that FastAPI and Starlette raise themselves,
# such as 400 for a multipart body with too many files or fields.
_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class ApiError(Exception):
    """An error that a route raises with its own status code and error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status)


def status_for(exc: BindIndexError) -> tuple[int, str]:
    """Return the HTTP status and error code of a library exception."""
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal_error"


def error_code(exc: BindIndexError) -> str:
    return status_for(exc)[1]


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers that turn every error, FastAPI's own included, into the JSON error body."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        log.info("%s %s: %d %s", request.method, request.url.path, exc.status, exc.message)
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(BindIndexError)
    async def library_error(request: Request, exc: BindIndexError) -> JSONResponse:
        status, code = status_for(exc)
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s: %d %s",
            request.method,
            request.url.path,
            status,
            exc,
        )
        return error_response(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg')}"
            for error in exc.errors()
        ]
        message = "invalid request: " + "; ".join(problems)
        return error_response(
            422, "invalid_request", message, details=jsonable_encoder(exc.errors())
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log only, never to the client.
        log.exception("%s %s failed with an unexpected error", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the service log")
