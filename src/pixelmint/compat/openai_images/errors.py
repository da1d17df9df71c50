"""Errors of the OpenAI-compatible API, and their rendering in OpenAI's envelope, in one place.

Every error answer of ``/openai/v1`` is ``{"error": {"message", "type", "param", "code"}}`` (all
four keys, as the openapi ``Error`` schema requires; protocols.md §3.3). ``OpenAIRoute``, the route
class of the router, renders whatever its routes raise: the project's ``PixelmintError`` classes
(translated from their native status and code by ``envelope``), request-validation errors, a
replayed ``Idempotency-Key`` answer, and unexpected exceptions (logged, 500; 503 when the database
is unreachable). Statuses, chosen for what the SDK raises (``openai._client._make_status_error``)
and retries (408, 409, 429, ≥500, unless ``x-should-retry: false``):

| ours | OpenAI | SDK exception | type / code |
|---|---|---|---|
| 401 | 401 | ``AuthenticationError`` | ``invalid_request_error`` / ``invalid_api_key``, ``missing_api_key`` |
| 422, and 409 for a model that is not ready or deleted | 400 | ``BadRequestError`` | ``invalid_request_error`` / ours, ``param`` = the OpenAI field |
| 402 ``insufficient_credits`` | 429, ``x-should-retry: false`` | ``RateLimitError`` | ``insufficient_quota`` / ``insufficient_quota`` |
| 403 | 403 | ``PermissionDeniedError`` | ``invalid_request_error`` / ours |
| 404 | 404 | ``NotFoundError`` | ``invalid_request_error`` / ``model_not_found``… |
| 409 (``Idempotency-Key``) | 409 | ``ConflictError`` | ``invalid_request_error`` / ours |
| 429 | 429, ``Retry-After`` | ``RateLimitError`` | ``requests`` / ``rate_limit_exceeded``, ``queue_full`` |
| 5xx | the same | ``InternalServerError`` | ``server_error`` / ours |

Out of credits is 429 ``insufficient_quota`` because that is what OpenAI answers when a key's
quota is spent: code written against OpenAI already catches ``RateLimitError`` and checks
``e.code == "insufficient_quota"``, while a 402 would surface as a bare ``APIStatusError`` that no
such code expects. ``x-should-retry: false`` keeps the SDK from retrying it (more time does not
bring credits); rate limits and a full queue stay retryable and carry ``Retry-After``.

Errors raised before a route runs (413 of ``kit/limits.BodyLimit``, a NUL in the URL) keep the
native body; every path under ``/openai/v1`` is a route (unknown ones: 404 ``unknown_url``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from pixelmint.kit.db import database_unreachable
from pixelmint.kit.errors import InvalidRequest, NotFound, PixelmintError
from pixelmint.kit.idempotency import REPLAYED_HEADER, Answer, Replay

log = structlog.get_logger(__name__)


class InvalidSize(InvalidRequest):
    """400 (param ``size``): not a size Pixelmint renders (OpenAI's sizes, ``auto``, or
    ``WIDTHxHEIGHT`` within the native resolution limits)."""

    code = "invalid_size"


class UnsupportedValue(InvalidRequest):
    """400: an OpenAI option Pixelmint cannot honour (``stream``, an ``output_format`` other than
    png, a transparent ``background``); ``param`` names it."""

    code = "unsupported_value"


class UnknownUrl(NotFound):
    """404: no OpenAI-compatible operation has this method and path."""

    code = "unknown_url"


class GenerationFailed(PixelmintError):
    """500: the generation failed (its credits were released); the message gives the job's error."""

    status_code = 500
    code = "generation_failed"


class GenerationTimedOut(PixelmintError):
    """503: the images were not ready within ``PIXELMINT_WAIT_FOR_RESULT_TIMEOUT_SECONDS``; the job
    was canceled and its credits released, so a retry pays only once."""

    status_code = 503
    code = "generation_timeout"
    headers = {"Retry-After": "10"}


# Native field names -> OpenAI's request fields.
_PARAMS = {
    "resolution": "size", "numImages": "n", "negativePrompt": "negative_prompt", "referenceModelId": "model",
    "customModelId": "model", "customModelVersion": "model",
}
_MODEL_CODES = {"model_not_found", "model_version_not_found", "model_not_ready", "model_deleted", "model_required"}
_NO_RETRY = {"x-should-retry": "false"}


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:  # noqa: A002 - OpenAI's key
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def envelope(status: int, native: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenAI's answer for a native error answer (``status`` and body ``{"error": code, "message",
    "field"?}``): the table of the module docstring."""
    code = native.get("error") if isinstance(native.get("error"), str) else None
    message = str(native.get("message") or "Request failed.")
    field = native.get("field")
    param = _PARAMS.get(field, field) if isinstance(field, str) else ("model" if code in _MODEL_CODES else None)
    kind = "invalid_request_error"
    extra: dict[str, str] = {}
    if status == 402:
        status, kind, code, extra = 429, "insufficient_quota", "insufficient_quota", _NO_RETRY
    elif status == 422 or code in ("model_not_ready", "model_deleted"):
        status = 400
    elif status == 429:
        kind, code = "requests", "rate_limit_exceeded" if code == "rate_limited" else code
    elif status >= 500:
        kind = "server_error"
    elif status == 409 and code != "idempotency_key_in_progress":
        extra = _NO_RETRY  # another body under the same key, or a lost answer: retrying cannot help
    return JSONResponse(error_body(message, type=kind, param=param, code=code), status_code=status,
                        headers={**(headers or {}), **extra})


def render(exc: PixelmintError) -> JSONResponse:
    return envelope(exc.status_code, exc.body(), exc.headers)


def _param(error: Mapping[str, Any]) -> str | None:
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
    inner = (error.get("ctx") or {}).get("field")  # invalid_text: where inside the body
    return ".".join([*location, inner] if inner else location) or None


def render_validation(exc: RequestValidationError) -> JSONResponse:
    """400 ``invalid_request_error`` for the first invalid field (``param``)."""
    first: Mapping[str, Any] = exc.errors()[0] if exc.errors() else {}
    param, kind = _param(first), first.get("type", "")
    if kind == "json_invalid":
        message, code, param = "We could not parse the JSON body of your request.", "invalid_json", None
    elif kind == "missing":
        message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
    elif kind == "invalid_text":
        message, code = str(first.get("msg", "invalid text")), "invalid_text"
    else:
        message, code = f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", "invalid_value"
    return JSONResponse(error_body(message, type="invalid_request_error", param=param, code=code), status_code=400)


def _replay(answer: Answer) -> Response:
    """A stored ``Idempotency-Key`` answer: an error stored in the native shape is translated."""
    if answer.status_code >= 400:
        try:
            native = json.loads(answer.body)
        except ValueError:
            native = None
        if isinstance(native, dict) and isinstance(native.get("error"), str):
            response = envelope(answer.status_code, native)
            response.headers[REPLAYED_HEADER] = "true"
            return response
    return answer.replay()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug (500, logged with the request id), or the database unreachable (503)."""
    where = {"method": request.method, "path": request.url.path}
    if database_unreachable(exc):
        log.error("database_unavailable", **where, error=f"{type(exc).__name__}: {exc}")
        return JSONResponse(error_body("The database cannot be reached right now; retry in a few seconds.",
                                       type="server_error", code="database_unavailable"),
                            status_code=503, headers={"Retry-After": "5"})
    log.error("internal_error", **where, exc_info=exc)
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return JSONResponse(error_body(f"Something went wrong on our side; it has been logged (request id {request_id}).",
                                   type="server_error", code="internal_error"), status_code=500)


async def _body_unreadable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # FastAPI could not read the body (not UTF-8, ...)
    return JSONResponse(error_body(str(exc.detail), type="invalid_request_error"),
                        status_code=400 if exc.status_code < 500 else exc.status_code)


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, PixelmintError)
    return render(exc)


async def _invalid_request(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return render_validation(exc)


async def _replayed(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Replay)
    return _replay(exc.answer)


_HANDLERS: dict[Any, Callable[[Request, Exception], Coroutine[Any, Any, Response]]] = {
    PixelmintError: _domain_error,
    RequestValidationError: _invalid_request,
    Replay: _replayed,
    StarletteHTTPException: _body_unreadable,
    Exception: _unexpected,
}


class OpenAIRoute(APIRoute):
    """The route class of ``/openai/v1`` (a FastAPI custom route class: the router stays in the
    main app, where ``kit/http.from_runtime`` finds the runtime). Its routes have their own
    exception handlers: whatever the endpoint or a dependency raises is rendered in OpenAI's
    envelope by ``_HANDLERS``, in place of the app's handlers (``api/errors.py``).

    They are Starlette's per-request handlers (``scope["starlette.exception_handlers"]``), which
    run after the dependencies have exited, as the app's do: the session rolls back and the
    ``Idempotency-Key`` guard sees the error. Catching around ``get_route_handler`` would not do:
    FastAPI exits the dependencies after it, so they would take the rendered error for success."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().handle({**scope, "starlette.exception_handlers": (_HANDLERS, {})}, receive, send)
