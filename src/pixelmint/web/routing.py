"""The route class of every page, and the static files.

``WebRoute`` wraps each page handler (its dependencies included): the answer gets the security
headers; ``SignInRequired`` becomes a redirect to ``/login?next=…``; any ``PixelmintError`` (a
domain error from a service, ``Forbidden``, ``NotFound`` for another team's object) and FastAPI's
validation errors become an HTML error page with the error's status, never JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import Scope

from pixelmint.kit.errors import PixelmintError, Unauthorized
from pixelmint.web.templating import render

# Scripts only from this origin (no inline script, no eval); styles likewise; images may come from
# a storage bucket or CDN (https:) or be data: URLs; no framing, no plugins, forms post here only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SignInRequired(Unauthorized):
    """401: the page needs a signed-in person (pages redirect to /login instead)."""

    code = "sign_in_required"


def error_page(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return render(request, "error.html", {"status": status, "message": message}, status_code=status,
                  headers=headers)


class WebRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            except PixelmintError as exc:
                response = error_page(request, exc.status_code, exc.message, exc.headers)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors())
                response = error_page(request, 422, f"The form is missing or has invalid fields: {fields}.")
            except HTTPException as exc:
                response = error_page(request, exc.status_code, str(exc.detail))
            response.headers.update(SECURITY_HEADERS)
            return response

        return page


def web_router(**kwargs: Any) -> APIRouter:
    """A router for pages: ``WebRoute``, not in the OpenAPI schema."""
    return APIRouter(route_class=WebRoute, include_in_schema=False, **kwargs)


class Static(StaticFiles):
    """``/static``: nosniff on every file; a year's cache when the URL carries its content hash."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if b"v=" in scope.get("query_string", b"") and response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response
