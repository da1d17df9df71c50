"""Templates, asset URLs and the navigation.

One template serves a full page and its htmx partials (``jinja2-fragments``): a page extends
``base.html`` and fills ``content``; the parts that htmx swaps are named blocks inside it, and
``render(request, "keys.html", ctx, block="keys_table")`` answers an htmx request (``HX-Request``)
with that block alone and any other request with the whole page.

Static files (``web/static``; third-party ones in ``static/vendor/<lib>/`` with their licences,
fetched by ``scripts/vendor-static``) are linked as ``/static/<path>?v=<first 12 hex of its
sha256>`` (``static_url``), cached for a year; a changed file gets a new URL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from jinja2_fragments.fastapi import Jinja2Blocks
from markupsafe import Markup

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"


@dataclass(frozen=True)
class NavEntry:
    label: str
    path: str
    # Shown only to these roles (None: everyone signed in).
    roles: tuple[str, ...] | None = None


# The signed-in navigation, in order. A new area adds its entry here (CONTRIBUTING.md, "Pages").
NAV: list[NavEntry] = [
    NavEntry("Home", "/app"),
    NavEntry("Generate", "/app/generate"),
    NavEntry("Models", "/app/models"),
    NavEntry("Catalog", "/app/catalog"),
    NavEntry("Gallery", "/app/gallery"),
    NavEntry("Jobs", "/app/jobs"),
    NavEntry("Credits", "/app/credits"),
    NavEntry("Webhooks", "/app/webhooks", roles=("owner", "admin")),
    NavEntry("API keys", "/app/keys", roles=("owner", "admin")),
    NavEntry("Team", "/app/team"),
]


@cache
def asset_hash(path: str) -> str:
    """First 12 hex characters of the file's SHA-256 (read once per process)."""
    return hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:12]


def static_url(path: str) -> str:
    return f"/static/{path}?v={asset_hash(path)}"


def credits(value: Decimal | int | None) -> str:
    """Credits as people read them: ``1,234.5`` → ``1,234.50``; whole numbers without decimals."""
    if value is None:
        return "–"
    amount = Decimal(value)
    return f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"


def when(value: dt.datetime | None) -> Markup | str:
    """A timestamp in UTC, to the minute (``2026-12-02 11:08 UTC``), as a ``<time>`` element whose
    date and time each stay on one line (a narrow table cell wraps between them, not inside)."""
    if not value:
        return "–"
    utc = value.astimezone(dt.UTC)
    return Markup('<time datetime="{}"><span>{}</span> <span>{}</span></time>').format(
        utc.isoformat(timespec="seconds"), utc.strftime("%Y-%m-%d"), utc.strftime("%H:%M UTC"))


def _context(request: Request) -> dict[str, Any]:
    user = getattr(request.state, "web_user", None)
    csrf = request.scope.get("csrftoken")
    return {
        "signed_in": user,
        "nav": [e for e in NAV if user is not None and (e.roles is None or user.role in e.roles)],
        "csrf_token": csrf() if csrf else "",
        "path": request.url.path,
    }


templates = Jinja2Blocks(directory=str(TEMPLATES_DIR), context_processors=[_context])
templates.env.globals["static_url"] = static_url
templates.env.filters["credits"] = credits
templates.env.filters["when"] = when


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The page ``name``, or only its ``block`` when htmx asks (``HX-Request: true``)."""
    if block is not None and is_htmx(request):
        return templates.TemplateResponse(
            request, name, context or {}, status_code=status_code, headers=headers, block_name=block
        )
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code, headers=headers)
