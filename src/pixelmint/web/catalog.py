"""The catalog: the reference models as a grid with their previews, filtered by category and
text, sorted by popularity or name, a page at a time (``catalog.service.list_models``, as
``GET /api/v1/reference-models``). A card leads to training a custom model from it and to
generating from it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request
from fastapi.responses import Response

from pixelmint.catalog import service as catalog
from pixelmint.catalog.endpoints import present
from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, integer, string
from pixelmint.storage.deps import UrlSignerDep
from pixelmint.web.auth import CurrentUserDep
from pixelmint.web.routing import web_router
from pixelmint.web.spending import placeholder_images
from pixelmint.web.templating import render

router = web_router(prefix="/app/catalog")

PAGE_SIZE = 12


@router.get("")
async def catalog_page(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, user: CurrentUserDep,
    category: Annotated[str, Query(max_length=50)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    sort: Literal["popularity", "name"] = "popularity",
    cursor: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    """The grid; htmx (the filter form, the next-page link) gets the ``results`` block alone. An
    unknown category shows nothing rather than an error."""
    after = tuple(decode_cursor(cursor, string if sort == "name" else integer, string)) if cursor else None
    page = await catalog.list_models(
        session, category=category or None, search=q.strip() or None, sort=sort, limit=PAGE_SIZE, after=after,
    )
    return render(request, "catalog.html", {
        "models": [present(m, urls) for m in page.items], "categories": catalog.CATEGORIES,
        "category": category, "q": q, "sort": sort, "cursor": cursor,
        "next_cursor": encode_cursor(*page.next_after) if page.next_after else None,
        "placeholder": placeholder_images(settings),
    }, block="results")
