"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their scripts served by the app itself, so they
work on a server without Internet access. The files (Swagger UI's bundle and CSS, ReDoc's
standalone bundle, a favicon) come from the ``fastapi-offline`` package and are served under
``/docs-assets/``; the pages are FastAPI's own, pointed at them."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, its OAuth2 redirect page, ``/redoc`` and ``/docs-assets/*`` to an app built
    with ``docs_url=None, redoc_url=None``; nothing for an app without a schema (``openapi_url=None``)."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    def url(request: Request, path: str) -> str:  # behind a proxy that strips a prefix, keep it
        return f"{request.scope.get('root_path', '')}{path}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=url(request, openapi_url), title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect, swagger_js_url=url(request, f"{ASSETS}/swagger-ui-bundle.js"),
            swagger_css_url=url(request, f"{ASSETS}/swagger-ui.css"),
            swagger_favicon_url=url(request, f"{ASSETS}/favicon.png"),
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=url(request, openapi_url), title=f"{app.title} - ReDoc",
            redoc_js_url=url(request, f"{ASSETS}/redoc.standalone.js"),
            redoc_favicon_url=url(request, f"{ASSETS}/favicon.png"),
            with_google_fonts=False,
        )
