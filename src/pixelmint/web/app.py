"""``install(app, settings)``: the dashboard's pages, ``/static`` and CSRF protection, added to the
API's app by ``api/app.py``."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from asgi_csrf import Errors, asgi_csrf
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pixelmint.settings import Settings
from pixelmint.web import credits, gallery, home, jobs, keys, public, team, webhooks
from pixelmint.web.routing import SECURITY_HEADERS, Static, error_page
from pixelmint.web.templating import STATIC_DIR

# Paths whose forms are checked even when the browser sends no cookie at all (asgi-csrf skips
# cookie-less posts otherwise): sign-in and sign-up, against login CSRF.
ALWAYS_PROTECT = {"/login", "/signup", "/invite", "/set-password"}

# Not the dashboard: the JSON API (and the compatible APIs) authenticate with Bearer keys, not
# cookies, and keep their own error bodies.
NOT_WEB = ("/api/", "/openai/", "/replicate/")


def secure_cookies(settings: Settings) -> bool:
    """Cookies get ``Secure`` when the public URL is https (``PIXELMINT_PUBLIC_URL``)."""
    return (settings.public_url or "").startswith("https://")


async def _csrf_failed(scope: Scope, send: Send, error: Errors) -> None:
    request = Request(scope)
    message = (
        "This form could not be accepted: its security token is missing or expired. Go back, reload the "
        "page and send it again."
    )
    if error is Errors.FILE_BEFORE_TOKEN:
        message = "The form sent a file before its csrftoken field; the token must come first."
    response = error_page(request, 403, message)
    response.headers.update(SECURITY_HEADERS)

    async def nothing() -> Any:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)


_OUTER_SCOPE = "pixelmint.outer_scope"


class Csrf:
    """asgi-csrf (double-submit cookie, signed) on every path but the APIs'."""

    def __init__(self, app: ASGIApp, *, secret: str, secure: bool) -> None:
        self.app = app
        self.protected = asgi_csrf(
            self._route_back, signing_secret=secret, always_protect=ALWAYS_PROTECT, cookie_secure=secure,
            skip_if_scope=lambda scope: scope["path"].startswith(NOT_WEB), send_csrf_failed=_csrf_failed,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(NOT_WEB):
            await self.app(scope, receive, send)
        else:
            await self.protected({**scope, _OUTER_SCOPE: scope}, receive, send)

    async def _route_back(self, scope: Scope, receive: Receive, send: Send) -> None:
        """asgi-csrf hands the app a copy of the scope: give the route the router sets in it back to
        the outer scope, where the middleware outside this one (``api/metrics.HttpMetrics``) reads it."""
        try:
            await self.app(scope, receive, send)
        finally:
            if "route" in scope and _OUTER_SCOPE in scope:
                scope[_OUTER_SCOPE]["route"] = scope["route"]


def install(app: FastAPI, settings: Settings) -> None:
    """Add the pages and ``/static``; add the CSRF middleware (call this before the middleware that
    must run outside it, such as the body limit)."""
    for router in (public.router, home.router, keys.router, team.router, gallery.router, jobs.router, credits.router, webhooks.router):
        app.include_router(router)
    app.mount("/static", Static(directory=STATIC_DIR), name="static")
    secret = hmac.new(settings.resolved_secret_key().encode(), b"pixelmint csrf", hashlib.sha256).hexdigest()
    app.add_middleware(Csrf, secret=secret, secure=secure_cookies(settings))
