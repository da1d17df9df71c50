"""The gallery: images newest first, the star (plain form and htmx) and the favourites filter,
model/job/date filters, the PNG's own parameters beside the image, download, delete after a
confirmation page, another team's image answering 404, and a post without the CSRF token refused."""

from __future__ import annotations

import datetime as dt
import io
import re

import httpx
from PIL import Image

from tests.web.helpers import csrf, other_client, post_form
from tests.web.pages import generate, image_ids, signed_up_with_key


async def test_star_filter_detail_download_and_delete(api_with_worker: httpx.AsyncClient) -> None:
    first_day = dt.datetime.now(dt.UTC).date()  # the rows below are made on this UTC day or the next
    api = api_with_worker
    key = await signed_up_with_key(api)
    first = await generate(api, key, prompt="a red lighthouse at dawn", seed=7)
    second = await generate(api, key, prompt="a blue bicycle at night", seed=9)
    assert first["status"] == second["status"] == "succeeded"
    newest, oldest = second["images"][0]["id"], first["images"][0]["id"]

    page = await api.get("/app/gallery")
    assert page.status_code == 200
    assert image_ids(page.text) == [newest, oldest]  # newest first
    assert 'placeholder-notice' in page.text  # the procedural renderer made them

    # A plain form stars (no JavaScript): back to the gallery, the favourites filter finds it.
    starred = await post_form(api, f"/app/gallery/{oldest}/favorite", {"favorite": "true", "next": "/app/gallery"})
    assert starred.status_code == 303 and starred.headers["location"] == "/app/gallery"
    favourites = await api.get("/app/gallery?favorites=1")
    assert image_ids(favourites.text) == [oldest]
    assert (await api.get(f"/api/v1/images/{oldest}", headers=key)).json()["favorite"] is True

    # htmx gets only the new star.
    star = await post_form(api, f"/app/gallery/{newest}/favorite", {"favorite": "true", "next": "/app/gallery"},
                           headers={"HX-Request": "true"})
    assert star.status_code == 200 and "<html" not in star.text
    assert 'aria-pressed="true"' in star.text and f'id="star-{newest}"' in star.text and 'value="false"' in star.text
    assert image_ids((await api.get("/app/gallery?favorites=1")).text) == [newest, oldest]
    unstar = await post_form(api, f"/app/gallery/{newest}/favorite", {"favorite": "false"}, headers={"HX-Request": "true"})
    assert 'aria-pressed="false"' in unstar.text
    assert image_ids((await api.get("/app/gallery?favorites=1")).text) == [oldest]

    # Filters: job, model, dates.
    assert image_ids((await api.get(f"/app/gallery?job={first['id']}")).text) == [oldest]
    assert image_ids((await api.get("/app/gallery?model=business-headshot")).text) == [newest, oldest]
    assert image_ids((await api.get("/app/gallery?model=fashion-editorial")).text) == []
    today = dt.datetime.now(dt.UTC).date()
    assert image_ids((await api.get(f"/app/gallery?since={first_day}&until={today}")).text) == [newest, oldest]
    assert image_ids((await api.get(f"/app/gallery?since={today + dt.timedelta(days=1)}")).text) == []
    bad = await api.get("/app/gallery?since=yesterday&job=nope")
    assert bad.status_code == 200 and "Use a date such as" in bad.text and "Not an id" in bad.text

    # The image's page: the parameters from the PNG file, reuse links, download.
    detail = await api.get(f"/app/gallery/{oldest}")
    assert detail.status_code == 200
    params = re.search(r'<table id="png-params">(.*?)</table>', detail.text, re.S)
    assert params, detail.text
    assert "a red lighthouse at dawn" in params.group(1) and "procedural (placeholder renderer)" in params.group(1)
    assert re.search(r"<th scope=\"row\">seed</th><td>7</td>", params.group(1))
    assert 'href="/app/generate?prompt=a+red+lighthouse+at+dawn&amp;referenceModelId=business-headshot"' in detail.text
    assert 'href="/app/generate?seed=7&amp;referenceModelId=business-headshot"' in detail.text
    assert "/app/generate?prompt=a+red+lighthouse+at+dawn&amp;seed=7&amp;referenceModelId=business-headshot" in detail.text
    download = await api.get(f"/app/gallery/{oldest}/download")
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert download.headers["content-disposition"].startswith('attachment; filename="pixelmint-7-')
    assert Image.open(io.BytesIO(download.content)).text["parameters"].startswith("a red lighthouse at dawn")

    # Delete: a confirmation page first (works without JavaScript), then the post.
    confirm = await api.get(f"/app/gallery/{oldest}/delete")
    assert confirm.status_code == 200 and f'action="/app/gallery/{oldest}/delete"' in confirm.text
    deleted = await post_form(api, f"/app/gallery/{oldest}/delete")
    assert deleted.status_code == 303
    assert image_ids((await api.get("/app/gallery")).text) == [newest]
    assert (await api.get(f"/api/v1/images/{oldest}", headers=key)).status_code == 404
    assert (await api.get(f"/app/gallery/{oldest}")).status_code == 404


async def test_another_teams_image_is_404_and_posts_need_the_csrf_token(api_with_worker: httpx.AsyncClient) -> None:
    api = api_with_worker
    key = await signed_up_with_key(api, "a@example.com")
    image = (await generate(api, key))["images"][0]["id"]

    b = other_client(api)
    await signed_up_with_key(b, "b@example.com")
    assert image_ids((await b.get("/app/gallery")).text) == []
    for url in (f"/app/gallery/{image}", f"/app/gallery/{image}/download", f"/app/gallery/{image}/delete"):
        answer = await b.get(url)
        assert answer.status_code == 404 and "<html" in answer.text, url
    for url in (f"/app/gallery/{image}/favorite", f"/app/gallery/{image}/delete"):
        assert (await post_form(b, url, {"favorite": "true"} if "favorite" in url else {})).status_code == 404, url

    # Without the token the post is refused and nothing changes.
    await csrf(api)
    refused = await api.post(f"/app/gallery/{image}/favorite", data={"favorite": "true"})
    assert refused.status_code == 403
    assert (await api.get(f"/api/v1/images/{image}", headers=key)).json()["favorite"] is False
    assert image_ids((await api.get("/app/gallery")).text) == [image]


async def test_signed_out_visitors_go_to_sign_in(api: httpx.AsyncClient) -> None:
    answer = await api.get("/app/gallery?favorites=1")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=%2Fapp%2Fgallery")
