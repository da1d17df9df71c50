"""Errors → HTTP, in one place. Every error answer is JSON ``{"error": <stable code>, "message":
<text>, "field"?, "details"?, ...}`` (the ``Error`` schema), and the OpenAPI schema says so on
every operation, with the statuses each may answer.

- ``PixelmintError`` (``kit/errors.py``): its status, code, extra fields and headers.
- Request validation: 422 ``invalid_request``, or ``invalid_text`` for text that PostgreSQL cannot
  store (NUL, lone surrogates: ``kit/schemas.RequestModel`` for bodies, ``EdgeMiddleware`` for URLs).
- Starlette's HTTP errors (unknown path 404, 405 with ``Allow``): their status.
- ``EdgeMiddleware``, outermost: the request id, URL text, and every exception nothing else
  handled: 422 ``value_out_of_range`` when PostgreSQL refused a number as out of range (a grant
  that would take a balance past numeric(14,2)), 503 ``database_unavailable`` (with
  ``Retry-After``) when the database cannot be reached, else 500 ``internal_error``; logged once,
  with the request id that the answer carries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelmint.kit.db import database_unreachable, exception_chain
from pixelmint.kit.errors import (
    DatabaseUnavailable,
    InternalError,
    InvalidRequest,
    InvalidText,
    PixelmintError,
    ValueOutOfRange,
    codes_by_status,
)
from pixelmint.kit.limits import PayloadTooLarge
from pixelmint.kit.schemas import unstorable_text

log = structlog.get_logger(__name__)

_SANE_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorOut(BaseModel):
    """The body of every error answer. Some codes add fields (insufficient_credits:
    requiredCredits, availableCredits, operation)."""

    model_config = ConfigDict(extra="allow", title="Error")

    error: str = Field(description="Stable machine-readable code, e.g. insufficient_credits")
    message: str = Field(description="What went wrong, for people")
    field: str | None = Field(None, description="The request field at fault, when there is one")
    details: list[ErrorDetail] | None = Field(None, description="Every invalid field (422 invalid_request)")
    request_id: str | None = Field(
        None, alias="requestId", description="On 500 and 503: the request id (also in X-Request-ID) to quote"
    )


def error_response(exc: PixelmintError, *, request_id: str | None = None) -> JSONResponse:
    body = exc.body() if request_id is None else {**exc.body(), "requestId": request_id}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _field(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
    inner = (error.get("ctx") or {}).get("field")  # invalid_text: where inside the body
    return ".".join([*location, inner] if inner else location)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PixelmintError)
    async def domain_error(_: Request, exc: PixelmintError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = [{"field": _field(e), "message": e.get("msg", "invalid"), "type": e.get("type", "")} for e in errors]
        first = errors[0] if errors else {}
        field = details[0]["field"] if details else ""
        code = "invalid_text" if first.get("type") == "invalid_text" else "invalid_request"
        if first.get("type") == "json_invalid":
            message = "The request body is not valid JSON."
        elif code == "invalid_text" or not field:
            message = str(first.get("msg", "invalid request"))
        else:
            message = f"{field}: {first.get('msg', 'invalid')}"
        return JSONResponse(
            {"error": code, "message": message, "field": field or None, "details": details}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, ...)
            return JSONResponse({"error": "invalid_request", "message": "The request body cannot be read as JSON."},
                                status_code=422)
        headers = exc.headers
        if exc.status_code == 405:  # every method of the path, not only those of the first route that matched it
            allowed = {m for route in _api_routes(request.app.routes) if route.matches(request.scope)[0] != Match.NONE
                       for m in route.methods or ()}
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=headers)

    document_errors(app)


# --------------------------------------------------------------------------------------------
# The edge: request ids, URL text, and errors nothing else handled


def _url_text_error(scope: Scope) -> InvalidText | None:
    """A NUL character in the path or the query string (percent-decoded, as the app reads them;
    invalid UTF-8 decodes to U+FFFD, so NUL is the only character the URL can smuggle in)."""
    if found := unstorable_text(scope["path"]):
        return InvalidText(f"The URL path {found[1]}.", field="path")
    for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if found := unstorable_text(name) or unstorable_text(value):
            return InvalidText(f"The query parameter {name!r} {found[1]}.", field=name)
    return None


class EdgeMiddleware:
    """Pure ASGI, outermost. Gives every request an id — a sane incoming ``X-Request-ID``
    (1..128 printable ASCII characters), else a new one — bound to every log line of the request
    and sent back in ``X-Request-ID``; answers 422 ``invalid_text`` for a NUL in the URL; and
    turns any exception that reached it into JSON (500 ``internal_error``, 503
    ``database_unavailable``) logged once, with ``requestId`` in the body. An exception after the
    answer has started (a stream) can only abort the connection: it is logged and re-raised."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            if rejected := _url_text_error(scope):
                await error_response(rejected)(scope, receive, send_with_id)
                return
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                where = {"method": scope["method"], "path": scope["path"], "request_id": request_id}
                if started:
                    log.error("response_failed_after_start", **where, exc_info=exc)
                    raise
                if any(isinstance(cause, asyncpg.NumericValueOutOfRangeError) for cause in exception_chain(exc)):
                    log.warning("value_out_of_range", **where, error=str(exc.__cause__ or exc))
                    error: PixelmintError = ValueOutOfRange(
                        "A number is beyond what the service stores (a balance or amount over 999,999,999,999.99 "
                        "credits); nothing was changed.")
                elif database_unreachable(exc):
                    log.error("database_unavailable", **where, error=f"{type(exc).__name__}: {exc}")
                    error = DatabaseUnavailable(
                        "The database cannot be reached right now; retry in a few seconds.")
                else:
                    log.error("internal_error", **where, exc_info=exc)
                    error = InternalError(
                        "Something went wrong on our side; it has been logged. Quote the requestId if you report it.")
                await error_response(error, request_id=request_id)(scope, receive, send_with_id)


# --------------------------------------------------------------------------------------------
# OpenAPI: the error answers of every operation

# Dependencies marked with kit/errors.error_responses add their errors to the operations that
# use them.

_EVERY_OPERATION = codes_by_status(InvalidRequest, InvalidText, ValueOutOfRange, InternalError, DatabaseUnavailable)
_WITH_BODY = codes_by_status(PayloadTooLarge)
_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _dependency_errors(dependant: Dependant) -> Iterator[tuple[int, str]]:
    for dependency in dependant.dependencies:
        yield from getattr(dependency.call, "error_responses", {}).items()
        yield from _dependency_errors(dependency)


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:  # an included router (FastAPI ≥ 0.16x)
            yield from _api_routes(router.routes)


def _document(operation: dict[str, Any], route: APIRoute) -> None:
    responses = operation.setdefault("responses", {})
    errors = {**_EVERY_OPERATION, **(_WITH_BODY if "requestBody" in operation else {})}
    if "requestBody" in operation or any(p["in"] == "path" for p in operation.get("parameters", ())):
        errors[404] = "not found: what the path or the body names does not exist (or is another team's)"
    for status, codes in _dependency_errors(route.dependant):
        errors[status] = f"{errors[status]}; {codes}" if status in errors and errors[status] != codes else codes
    for status, codes in errors.items():
        declared = responses.setdefault(str(status), {})
        if declared.get("description") in (None, "", "Validation Error"):  # FastAPI's own 422 says nothing
            declared["description"] = codes
        elif codes not in declared["description"]:
            declared["description"] = f"{declared['description']}; {codes}"
    for status, response in responses.items():
        if status[0] in "45":
            response["content"] = {"application/json": {"schema": _ERROR_REF}}
    responses["503"]["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
    operation["responses"] = dict(sorted(responses.items()))


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` document the real error body (``Error``) on every operation, with
    422, 500 and 503 everywhere, 413 where there is a body, the statuses of the operation's
    dependencies (``error_responses``) and those the route declares (``responses=``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for route in _api_routes(app.routes):
                if route.include_in_schema:
                    for method in route.methods or ():
                        _document(schema["paths"][route.path_format][method.lower()], route)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            error = ErrorOut.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            components.update(error.pop("$defs"))
            components["Error"] = error
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
