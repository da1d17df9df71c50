"""``install(app, settings)``: the dashboard's pages, ``/static`` and CSRF protection, added to the
API's app by ``api/app.py``."""

from __future__ import annotations

import hashlib
import hmac
import inspect
from typing import Any

from asgi_csrf import DEFAULT_SIGNING_NAMESPACE, Errors, asgi_csrf
from fastapi import FastAPI, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeSerializer
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelmint.settings import Settings
from pixelmint.web import auth, catalog, credits, gallery, generate, home, jobs, keys, models, public, team, webhooks
from pixelmint.web.routing import SECURITY_HEADERS, Static, error_page
from pixelmint.web.templating import STATIC_DIR, render

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

# A multipart form's csrftoken field comes first (CONTRIBUTING.md, "Pages"): it must end within
# this many bytes of the body.
TOKEN_WITHIN = 64 * 1024


class _TokenFound(Exception):
    pass


class _FileBeforeToken(Exception):
    pass


async def _multipart_token(scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
    """The ``csrftoken`` field of a multipart body, read up to it (a file part before it raises
    ``_FileBeforeToken``; none within the first ``TOKEN_WITHIN`` bytes is none at all, so that a
    forged post is refused before its body is read), and a ``receive`` that replays what was read. asgi-csrf 0.11 does this
    with an argument python-multipart 0.0.26 removed (simonw/asgi-csrf#38), so ``Csrf`` finds the
    field itself and hands it to asgi-csrf as the ``x-csrftoken`` header, which it then checks
    against the signed cookie as usual."""
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    _, options = parse_options_header(content_type)
    messages: list[Message] = []

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    headers: dict[bytes, bytes] = {}
    field, value, name = [b""], [b""], [b""]
    collecting = [False]

    def header_field(data: bytes, start: int, end: int) -> None:
        field[0] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        value[0] += data[start:end]

    def header_end() -> None:
        headers[field[0].lower()] = value[0]
        field[0], value[0] = b"", b""

    def headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if b"filename" in disposition:
            raise _FileBeforeToken
        collecting[0] = disposition.get(b"name") == b"csrftoken"
        headers.clear()

    def part_data(data: bytes, start: int, end: int) -> None:
        if collecting[0]:
            name[0] += data[start:end]

    def part_end() -> None:
        if collecting[0]:
            raise _TokenFound(name[0].decode("utf-8", "replace"))

    parser = MultipartParser(options.get(b"boundary", b""), callbacks={
        "on_header_field": header_field, "on_header_value": header_value, "on_header_end": header_end,
        "on_headers_finished": headers_finished, "on_part_data": part_data, "on_part_end": part_end,
    })
    more, read = True, 0
    try:
        while more and read <= TOKEN_WITHIN:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            read += len(body)
            parser.write(body)
            more = message.get("more_body", False)
    except _TokenFound as found:
        return found.args[0], replay
    except MultipartParseError:
        pass
    return None, replay


class Csrf:
    """asgi-csrf (double-submit cookie, signed) on every path but the APIs'."""

    def __init__(self, app: ASGIApp, *, secret: str, secure: bool) -> None:
        self.app = app
        self._signer = URLSafeSerializer(secret)
        self.protected = asgi_csrf(
            self._route_back, signing_secret=secret, always_protect=ALWAYS_PROTECT, cookie_secure=secure,
            skip_if_scope=lambda scope: scope["path"].startswith(NOT_WEB), send_csrf_failed=_csrf_failed,
        )

    def _signed(self, cookie: str) -> bool:
        """The cookie is a token asgi-csrf signed (its check of the header, which a multipart post
        gets from ``_multipart_token``, would otherwise fall back to its broken parser)."""
        try:
            self._signer.loads(cookie, DEFAULT_SIGNING_NAMESPACE)
        except (BadSignature, UnicodeEncodeError):
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The APIs pass; a multipart post's token is found first (``_multipart_token``); then asgi-csrf."""
        outer = scope
        if scope["type"] == "http" and scope["path"].startswith(NOT_WEB):
            await self.app(scope, receive, send)
            return
        if (scope["type"] == "http" and scope["method"] == "POST"
                and dict(scope["headers"]).get(b"content-type", b"").startswith(b"multipart/form-data")):
            try:
                token, receive = await _multipart_token(scope, receive)
            except _FileBeforeToken:
                await _csrf_failed(scope, send, Errors.FILE_BEFORE_TOKEN)
                return
            cookie = Request(scope).cookies.get("csrftoken", "")
            if not (token and hmac.compare_digest(token.encode(), cookie.encode()) and self._signed(cookie)):
                await _csrf_failed(scope, send, Errors.MULTIPART_MISMATCH)
                return
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-csrftoken"]
            scope = {**scope, "headers": [*headers, (b"x-csrftoken", token.encode("latin-1"))]}
        await self.protected({**scope, _OUTER_SCOPE: outer}, receive, send)

    async def _route_back(self, scope: Scope, receive: Receive, send: Send) -> None:
        """asgi-csrf hands the app a copy of the scope: give the route the router sets in it back to
        the outer scope, where the middleware outside this one (``api/metrics.HttpMetrics``) reads it."""
        try:
            await self.app(scope, receive, send)
        finally:
            if "route" in scope and _OUTER_SCOPE in scope:
                scope[_OUTER_SCOPE]["route"] = scope["route"]


def _html_errors_under_app(app: FastAPI) -> None:
    """An unknown path (or method) under ``/app`` gets the HTML error page with its status (404,
    405 with ``Allow``); every other path keeps the handler the API installed (JSON
    ``{"error": "not_found", …}`` for ``/api/``, ``/openai/``, ``/replicate/``)."""
    api_handler = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if not isinstance(exc, StarletteHTTPException) or not (path == "/app" or path.startswith("/app/")):
            answer = api_handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        message = {404: "There is no page at this address.", 405: "This page does not take that kind of request."}
        response = render(request, "error.html", {
            "status": exc.status_code, "message": message.get(exc.status_code, str(exc.detail)),
            "has_session": auth.COOKIE in request.cookies,  # no page ran to look the person up
        }, status_code=exc.status_code, headers=dict(exc.headers or {}))
        response.headers.update(SECURITY_HEADERS)
        return response

    app.add_exception_handler(StarletteHTTPException, http_error)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the pages and ``/static``; add the CSRF middleware (call this before the middleware that
    must run outside it, such as the body limit) and the HTML error page for unknown paths under
    ``/app`` (call this after the API's error handlers)."""
    _html_errors_under_app(app)
    for router in (public.router, home.router, generate.router, models.router, catalog.router, gallery.router,
                   jobs.router, credits.router, webhooks.router, keys.router, team.router):
        app.include_router(router)
    app.mount("/static", Static(directory=STATIC_DIR), name="static")
    secret = hmac.new(settings.resolved_secret_key().encode(), b"pixelmint csrf", hashlib.sha256).hexdigest()
    app.add_middleware(Csrf, secret=secret, secure=secure_cookies(settings))
