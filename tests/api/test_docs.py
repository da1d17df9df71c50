"""``/docs`` and ``/redoc`` work offline: their pages load scripts, styles and icons from the app
itself, never from a CDN, and every one of those URLs answers with the asset."""

from __future__ import annotations

import re

import pytest

KINDS = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_reference_only_assets_the_app_serves(api, page: str) -> None:
    response = await api.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?:|//", html)  # nothing from another host (CDN, fonts)
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    scripts = re.findall(r"""<script src=["']([^"']+)["']""", html)
    assert scripts and all(url.startswith("/docs-assets/") for url in assets), assets
    assert re.search(r"""url: ?['"]/openapi\.json['"]|spec-url=["']/openapi\.json["']""", html)
    for url in assets:
        asset = await api.get(url)
        assert asset.status_code == 200, url
        assert KINDS[url[url.rindex("."):]] in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000


async def test_swagger_oauth2_redirect_page_is_served(api) -> None:
    response = await api.get("/docs/oauth2-redirect")
    assert response.status_code == 200 and "oauth2" in response.text
