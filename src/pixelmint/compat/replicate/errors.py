"""The Replicate surface's errors, and their rendering, in one place: Replicate's problem details.

Replicate answers errors as RFC 7807 problem details ``{"title", "detail", "status"}``
(``protocols.md`` §2.1), which the SDK parses into ``ReplicateError`` (``replicate/exceptions.py``
``ReplicateError.from_response``: ``type, title, detail, instance`` from the body, ``status``
from the answer). Every route of ``endpoints.router`` is a ``ReplicateRoute``, whose handler turns
what the native API renders as ``{"error", "message"}`` (``api/errors.py``) into that shape:

- a ``PixelmintError``: its status and headers (``Retry-After`` on 429), ``title`` from its
  code, ``detail`` its message, plus ``code`` and its extra fields (402 ``insufficient_credits``:
  ``requiredCredits``, ``availableCredits``, ``operation``);
- request validation: 422 with Replicate's ``invalid_fields`` (``[{"type", "field",
  "description"}]``);
- Starlette's HTTP errors: their status.

A route class rather than a mounted sub-application, so that ``request.app`` stays the main app
whose state holds the runtime (``kit/http.from_runtime``). Failures nothing handles (a bug, the
database down) still reach ``api/errors.EdgeMiddleware``: 500/503 in the native shape.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from pixelmint.kit.errors import InvalidRequest, NotFound, PixelmintError

PROBLEM_JSON = "application/problem+json"

# Our field names (native camelCase) as this surface's inputs name them.
_FIELDS = {"numImages": "num_outputs", "negativePrompt": "negative_prompt", "resolution": "width",
           "trainingImageUrls": "input_images", "trainingImages": "input_images", "trainingSteps": "steps",
           "triggerWord": "trigger_word"}
_TITLES = {400: "Bad request", 401: "Unauthenticated", 402: "Insufficient credits", 403: "Forbidden",
           404: "Not found", 405: "Method not allowed", 409: "Conflict", 413: "Payload too large",
           422: "Invalid input", 429: "Too many requests"}


class PredictionNotFound(NotFound):
    """No prediction (image-generation job) of the caller's team has this id."""

    code = "prediction_not_found"


class TrainingNotFound(NotFound):
    """No training (model creation or refinement job) of the caller's team has this id."""

    code = "training_not_found"


class VersionNotFound(NotFound):
    """The model has no such version (or a version id names another model)."""

    code = "version_not_found"


class InvalidVersion(InvalidRequest):
    """``version`` is neither ``owner/name[:version]`` nor a version id (a bare ``"1"`` names no
    model: use the version's id, from ``GET /v1/models/{owner}/{name}/versions``)."""

    code = "invalid_version"


class InvalidDestination(InvalidRequest):
    """A training's ``destination`` is not ``<teamId>/<name>`` of the caller's team, or names a
    model that cannot take this training."""

    code = "invalid_destination"


def problem(status: int, detail: str, *, title: str | None = None, headers: Mapping[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    """A problem-details answer: ``{"title", "detail", "status", **extra}``."""
    body = {"title": title or _TITLES.get(status, "Error"), "detail": detail, "status": status, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def render(exc: Exception) -> Response:
    """The problem-details answer of an error this surface handles. Raises ``exc`` again for any
    other (the edge middleware's to handle)."""
    if isinstance(exc, PixelmintError):
        extra = dict(exc.extra)
        if "field" in extra:
            extra["field"] = _FIELDS.get(extra["field"], extra["field"])
        title = exc.code.replace("_", " ").capitalize()
        return problem(exc.status_code, exc.message, title=title, headers=exc.headers, code=exc.code, **extra)
    if isinstance(exc, RequestValidationError):
        fields = [
            {"type": e.get("type", "invalid"), "field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "body",
             "description": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{f['field']}: {f['description']}" for f in fields) or "invalid request"
        return problem(422, detail, code="invalid_request", invalid_fields=fields)
    if isinstance(exc, StarletteHTTPException):
        status = 422 if exc.status_code == 400 else exc.status_code  # a body FastAPI cannot read
        return problem(status, str(exc.detail), headers=exc.headers)
    raise exc


class ReplicateRoute(APIRoute):
    """FastAPI's custom route class: errors raised by the endpoint or its dependencies (the API
    key, rate limits, the body) are rendered by ``render``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (PixelmintError, RequestValidationError, StarletteHTTPException) as exc:
                return render(exc)

        return handle
