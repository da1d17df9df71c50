"""Custom-model pages through httpx: the list and its search, the new-model form with its live
estimate and refusals in words (402, the free plan), creating a model from uploaded images,
refining it, renaming, deleting after a confirmation, another team's model answering 404, and a
form without its CSRF token refused."""

from __future__ import annotations

import re

import httpx

from pixelmint.jobs.events import JobEvents
from pixelmint.kit.db import Database
from tests.builders import solid_png
from tests.web.helpers import csrf, other_client, post_form, sign_up
from tests.web.paying import make_paying

EMAIL = "ada@example.com"


def images(count: int = 2) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("trainingImages", (f"face-{i}.png", solid_png((200, 40 * i, 90)), "image/png")) for i in range(count)]


async def create(client: httpx.AsyncClient, *, name: str = "Autumn", count: int = 2,
                 reference: str = "fashion-editorial", **fields: str) -> httpx.Response:
    data = {"csrftoken": await csrf(client), "referenceModelId": reference, "name": name, "triggerWord": "ohwx",
            "trainingSteps": "500", "imageCount": str(count), **fields}
    return await client.post("/app/models", data=data, files=images(count))


def model_id(response: httpx.Response) -> str:
    match = re.search(r"/app/models/([0-9a-f-]{36})$", response.headers["location"])
    assert match, response.headers.get("location")
    return match.group(1)


async def test_the_estimate_partial_follows_the_inputs(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    await make_paying(db, EMAIL, credits="100")
    page = await api.get("/app/models/new?referenceModelId=fashion-editorial")
    assert page.status_code == 200 and 'name="trainingImages"' in page.text and "multiple" in page.text
    assert '<option value="fashion-editorial" selected>' in page.text
    # 50 × 1.2 × 1.5 = 90; 8 images: + 0.5 × 3
    few = await api.get("/app/models/estimate?referenceModelId=fashion-editorial&imageCount=2", headers={"HX-Request": "true"})
    many = await api.get("/app/models/estimate?referenceModelId=fashion-editorial&imageCount=8", headers={"HX-Request": "true"})
    assert "<html" not in few.text
    assert '<strong id="estimate-cost">90</strong>' in few.text and '<strong id="estimate-cost">91.50</strong>' in many.text
    assert 'id="estimate-warning"' not in few.text
    unknown = await api.get("/app/models/estimate?referenceModelId=nope&imageCount=2")
    assert 'id="estimate-error"' in unknown.text


async def test_the_free_plan_and_a_short_balance_are_explained(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    free = await api.get("/app/models/estimate?referenceModelId=fashion-editorial&imageCount=2")
    assert "The free plan cannot train or refine models" in free.text
    refused = await create(api)
    assert refused.status_code == 403
    assert "The free plan runs only the free image generations" in refused.text and "upgrade the plan" in refused.text
    assert 'value="Autumn"' in refused.text  # the form keeps what was typed

    await make_paying(db, EMAIL, credits="10")
    short = await api.get("/app/models/estimate?referenceModelId=fashion-editorial&imageCount=2")
    assert "Not enough credits: this needs 90 and the team has 10 available" in short.text
    refused = await create(api)
    assert refused.status_code == 402
    assert "this needs 90 credits and the team has 10 available" in refused.text
    listing = await api.get("/app/models")
    assert "No custom models yet" in listing.text  # nothing of the refused model stayed


async def test_bad_images_are_shown_beside_the_field(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    await make_paying(db, EMAIL)
    data = {"csrftoken": await csrf(api), "referenceModelId": "fashion-editorial", "name": "Broken",
            "trainingSteps": "500"}
    bad = await api.post("/app/models", data=data, files=[("trainingImages", ("notes.png", b"not a picture", "image/png"))])
    assert bad.status_code == 422 and 'id="e-trainingImages"' in bad.text and "notes.png" in bad.text


async def test_create_refine_rename_and_delete_a_model(
    api_with_worker: httpx.AsyncClient, db: Database, settings: object,
) -> None:
    api = api_with_worker
    await sign_up(api, EMAIL)
    await make_paying(db, EMAIL)
    created = await create(api)
    assert created.status_code == 303, created.text
    mid = model_id(created)
    events: JobEvents = api.app.state.runtime.events  # type: ignore[attr-defined]
    page = await wait_for(api, f"/app/models/{mid}", 'id="version-1"', events)
    assert "Autumn" in page.text and 'id="refine-button"' in page.text
    assert "hx-trigger" not in page.text.split('id="model-live"')[1].split(">")[0]  # no more polling

    listing = await api.get("/app/models?q=autu")
    assert f'href="/app/models/{mid}"' in listing.text and "status-ready" in listing.text
    assert "No custom model matches" in (await api.get("/app/models?q=zebra")).text

    refined = await post_form(api, f"/app/models/{mid}/refine", {"prompt": "warmer light"}, headers={"HX-Request": "true"})
    assert refined.status_code == 200 and "<html" not in refined.text and 'id="model-live"' in refined.text
    page = await wait_for(api, f"/app/models/{mid}", 'id="version-2"', events)
    assert "“warmer light”" in page.text and ">v2</strong>" in page.text

    empty = await post_form(api, f"/app/models/{mid}/refine", {"prompt": "   "})
    assert empty.status_code == 422 and 'id="e-prompt"' in empty.text

    renamed = await post_form(api, f"/app/models/{mid}/rename", {"name": "Winter", "description": "cold"})
    assert renamed.status_code == 303
    assert '<h1 id="model-name">Winter</h1>' in (await api.get(f"/app/models/{mid}")).text

    confirm = await api.get(f"/app/models/{mid}/delete")
    assert confirm.status_code == 200 and "Delete “Winter”?" in confirm.text
    assert f'action="/app/models/{mid}/delete"' in confirm.text
    deleted = await post_form(api, f"/app/models/{mid}/delete")
    assert deleted.status_code == 303 and deleted.headers["location"] == "/app/models"
    assert (await api.get(f"/app/models/{mid}")).status_code == 404


async def wait_for(api: httpx.AsyncClient, url: str, marker: str, events: JobEvents) -> httpx.Response:
    """The page once it shows ``marker``: re-read after each job state change (NOTIFY), bounded.
    The listener is in place before the first read, so no change between a read and the wait is
    missed."""
    import asyncio

    changed = asyncio.Event()
    events.add_state_listener(lambda _job, _state: changed.set())
    for _ in range(60):
        changed.clear()
        page = await api.get(url)
        if marker in page.text:
            return page
        try:
            await asyncio.wait_for(changed.wait(), 2)
        except TimeoutError:
            pass
    raise AssertionError(f"{url} never showed {marker}")


async def test_another_teams_model_is_404_and_csrf_is_required(api: httpx.AsyncClient, db: Database) -> None:
    await sign_up(api, EMAIL)
    await make_paying(db, EMAIL)
    mid = model_id(await create(api))
    async with other_client(api) as bob:
        await sign_up(bob, "bob@example.com")
        for url in (f"/app/models/{mid}", f"/app/models/{mid}/delete"):
            assert (await bob.get(url)).status_code == 404
        assert (await post_form(bob, f"/app/models/{mid}/rename", {"name": "mine"})).status_code == 404
        assert (await post_form(bob, f"/app/models/{mid}/delete")).status_code == 404
        assert mid not in (await bob.get("/app/models")).text
    no_token = await api.post(f"/app/models/{mid}/rename", data={"name": "x"})
    assert no_token.status_code == 403 and "security token" in no_token.text
    multipart = await api.post("/app/models", data={"referenceModelId": "fashion-editorial", "name": "x"}, files=images(1))
    assert multipart.status_code == 403
