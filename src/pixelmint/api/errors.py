"""Errors → HTTP, in one place. Bodies are ``{"error": <stable code>, "message": <text>, ...}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelmint.kit.errors import PixelmintError

_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PixelmintError)
    async def domain_error(_: Request, exc: PixelmintError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = ".".join(location)
        if first.get("type") == "json_invalid":
            message = "The request body is not valid JSON."
        else:
            message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")),
             "message": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        return JSONResponse(
            {"error": "invalid_request", "message": message, "field": field or None, "details": details},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code)
