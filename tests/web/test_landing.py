"""The landing page, the static files and the security headers of pages."""

from __future__ import annotations

import hashlib
import re

import httpx

from pixelmint.web.templating import STATIC_DIR


async def test_landing_shows_the_plans_from_the_plans_table_and_the_formulas(shared_api: httpx.AsyncClient) -> None:
    page = await shared_api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for plan, credits, concurrency in (("Basic", "500", "1"), ("Pro", "2,000", "3"), ("Enterprise", "10,000", "10")):
        assert re.search(rf"<th scope=\"row\">{plan}</th>\s*<td>{credits}</td>\s*<td>{concurrency}</td>", page.text)
    assert "5 credits × the resolution multiplier" in page.text
    assert "3 free image generations" in page.text
    assert 'href="/signup"' in page.text and 'href="/login"' in page.text


async def test_pages_carry_a_strict_csp_and_no_framing(shared_api: httpx.AsyncClient) -> None:
    page = await shared_api.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline for the CSP to block


async def test_assets_are_linked_by_content_hash_and_cached_long(shared_api: httpx.AsyncClient) -> None:
    page = await shared_api.get("/")
    links = re.findall(r'(?:href|src)="(/static/[^"?]+)\?v=([0-9a-f]{12})"', page.text)
    assert {path for path, _ in links} >= {
        "/static/vendor/htmx/htmx.min.js", "/static/vendor/pico/pico.min.css", "/static/app.css", "/static/app.js",
    }
    for path, digest in links:
        assert hashlib.sha256((STATIC_DIR / path.removeprefix("/static/")).read_bytes()).hexdigest()[:12] == digest
        asset = await shared_api.get(f"{path}?v={digest}")
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"


def test_every_vendored_library_has_its_licence_and_pinned_version() -> None:
    vendor = STATIC_DIR / "vendor"
    for library in ("htmx", "htmx-ext-sse", "pico", "chartjs"):
        files = {p.name for p in (vendor / library).iterdir()}
        assert any(name.startswith("LICENSE") for name in files), library
        assert "VERSION" in files
    assert (vendor / "htmx" / "VERSION").read_text().startswith("htmx.org@2.0.11\n")  # 2.x pinned exactly


async def test_the_json_api_keeps_json_errors_and_its_docs(shared_api: httpx.AsyncClient) -> None:
    missing = await shared_api.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert (await shared_api.get("/openapi.json")).status_code == 200
    assert (await shared_api.get("/healthz")).status_code == 200
    schema = (await shared_api.get("/openapi.json")).json()
    assert not any(path in schema["paths"] for path in ("/", "/login", "/app"))


async def test_unknown_pages_under_app_get_the_html_error_page_and_the_apis_keep_json(
    shared_api: httpx.AsyncClient,
) -> None:
    for path in ("/app/no-such-page", "/app/models/new/extra", "/app/gallery/not-an-id/nothing"):
        page = await shared_api.get(path)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html"), path
        assert "<h1>Not found</h1>" in page.text and 'href="/">Back to the start page' in page.text
        assert page.headers["content-security-policy"] and page.headers["x-frame-options"] == "DENY"
    wrong_method = await shared_api.get("/app/keys/00000000-0000-0000-0000-000000000000/revoke")
    assert wrong_method.status_code == 405 and "<html" in wrong_method.text and wrong_method.headers["allow"] == "POST"
    for path in ("/api/v1/nothing-here", "/openai/v1/nothing-here", "/replicate/v1/nothing-here"):
        missing = await shared_api.get(path)  # each API's own JSON error shape
        assert missing.status_code == 404 and missing.headers["content-type"].endswith("json"), path
        assert "<html" not in missing.text and missing.json(), path
    # Someone with a session cookie is sent back to the dashboard (it asks to sign in if the session is gone).
    shared_api.cookies.set("pixelmint_session", "whatever")
    try:
        assert 'href="/app">Back to your dashboard' in (await shared_api.get("/app/no-such-page")).text
    finally:
        shared_api.cookies.delete("pixelmint_session")
