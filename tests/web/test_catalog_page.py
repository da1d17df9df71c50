"""The catalog page: the grid with previews or a placeholder, category filter, text search, sort,
pages, the htmx partial, and each card's links to training and generating."""

from __future__ import annotations

import re

import httpx

from tests.web.helpers import sign_up


async def test_the_catalog_filters_searches_sorts_and_pages(api: httpx.AsyncClient) -> None:
    await sign_up(api)
    page = await api.get("/app/catalog")
    assert page.status_code == 200
    cards = re.findall(r'<article class="model-card">', page.text)
    assert len(cards) == 12
    assert 'href="/app/generate?referenceModelId=' in page.text and 'href="/app/models/new?referenceModelId=' in page.text
    assert 'class="thumb' in page.text

    fashion = await api.get("/app/catalog?category=fashion")
    assert set(re.findall(r'<span class="badge">(\w+)</span> complexity', fashion.text)) == {"fashion"}

    by_name = await api.get("/app/catalog?sort=name")
    names = re.findall(r"<h3>([^<]+)</h3>", by_name.text)
    assert names == sorted(names)

    next_url = re.search(r'href="(/app/catalog\?[^"]*cursor=[^"]+)"', by_name.text).group(1)  # type: ignore[union-attr]
    second = await api.get(next_url.replace("&amp;", "&"), headers={"HX-Request": "true"})
    assert "<html" not in second.text
    more = re.findall(r"<h3>([^<]+)</h3>", second.text)
    assert more and more[0] >= names[-1] and not set(more) & set(names)

    found = await api.get("/app/catalog?q=Editorial+Studio")
    assert "Editorial Studio" in found.text
    nothing = await api.get("/app/catalog?q=zzzzzz")
    assert 'id="no-models"' in nothing.text


async def test_the_catalog_needs_a_sign_in(api: httpx.AsyncClient) -> None:
    page = await api.get("/app/catalog")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
