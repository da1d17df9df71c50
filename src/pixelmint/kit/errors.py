"""One error hierarchy for the whole service, rendered to HTTP in one place (``api/errors.py``).

Every error has a stable machine-readable ``code`` (the ``error`` field of the JSON body), an HTTP
``status_code`` and a human ``message``; ``extra`` fields are added to the body as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


# FastAPI's ``responses=`` of a route: status → OpenAPI response object.
Responses = dict[int | str, dict[str, Any]]


def codes_by_status(*errors: type[PixelmintError]) -> dict[int, str]:
    """Each status of ``errors`` → their codes, in order (``{404: "app_not_found, team_not_found"}``)."""
    codes: dict[int, list[str]] = {}
    for error in errors:
        codes.setdefault(error.status_code, []).append(error.code)
    return {status: ", ".join(names) for status, names in codes.items()}


def error_responses(*errors: type[PixelmintError]) -> Callable[[F], F]:
    """Mark a dependency with the errors it may raise; the OpenAPI schema lists them on every
    operation that uses it (``api/errors.py``)."""

    def mark(dependency: F) -> F:
        dependency.error_responses = codes_by_status(*errors)  # type: ignore[attr-defined]
        return dependency

    return mark


def responses(*errors: type[PixelmintError], **extra: dict[str, Any]) -> Responses:
    """The ``responses=`` of a route that may raise these errors: each status → its codes, in order
    (e.g. ``{404: {"description": "app_not_found, team_not_found"}}``). ``extra`` adds other
    response objects by status (``_200={...}``: a second success shape or content type)."""
    documented: Responses = {status: {"description": codes} for status, codes in codes_by_status(*errors).items()}
    for status, response in extra.items():
        documented[int(status.lstrip("_"))] = response
    return documented


class PixelmintError(Exception):
    status_code: int = 400
    code: str = "bad_request"
    # HTTP headers to send with the error (e.g. ``Retry-After``).
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        if code:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class InvalidRequest(PixelmintError):
    status_code = 422
    code = "invalid_request"


class Unauthorized(PixelmintError):
    status_code = 401
    code = "unauthorized"


class NotFound(PixelmintError):
    status_code = 404
    code = "not_found"


class Conflict(PixelmintError):
    status_code = 409
    code = "conflict"


class Forbidden(PixelmintError):
    status_code = 403
    code = "forbidden"


class TooManyRequests(PixelmintError):
    status_code = 429
    code = "too_many_requests"


class InvalidText(InvalidRequest):
    """Text that PostgreSQL cannot store: a NUL character or a lone UTF-16 surrogate."""

    code = "invalid_text"


class ValueOutOfRange(InvalidRequest):
    """422: PostgreSQL refused a number as out of range (a balance or amount beyond numeric(14,2));
    nothing was changed."""

    code = "value_out_of_range"


class InternalError(PixelmintError):
    """An unexpected failure (a bug): logged with the request id, which the answer carries."""

    status_code = 500
    code = "internal_error"


class DatabaseUnavailable(PixelmintError):
    """The database cannot be reached (down, restarting, out of connections): retry later."""

    status_code = 503
    code = "database_unavailable"
    headers = {"Retry-After": "5"}
