"""The jobs pages: the list with its filters, a job's timings, log and credit trail (reserved,
then charged or given back), cancel, another team's job answering 404."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx

from pixelmint.kit.db import Database
from pixelmint.web.templating import credits
from tests.builders import assert_ledger_ok
from tests.web.helpers import other_client, post_form
from tests.web.pages import generate, make_paying, signed_up_with_key


def job_ids(html: str) -> list[str]:
    return re.findall(r'data-job-id="([0-9a-f-]{36})"', html)


def trail(html: str) -> list[str]:
    return re.findall(r'<tr class="trail-\w+" data-type="(\w+)">', html)


async def test_a_queued_job_shows_its_hold_and_cancel_gives_it_back(api: httpx.AsyncClient, db: Database) -> None:
    key = await signed_up_with_key(api)
    await make_paying(db)
    first = await generate(api, key, waitForResult=False)
    second = await generate(api, key, waitForResult=False, prompt="a green field")
    assert first["status"] == "queued" and not first["isFree"]
    held = first["estimatedCredits"]

    listing = await api.get("/app/jobs")
    assert job_ids(listing.text) == [second["id"], first["id"]]
    assert "held" in listing.text

    page = await api.get(f"/app/jobs/{first['id']}")
    assert page.status_code == 200
    assert trail(page.text) == ["reserve"]
    assert 'hx-trigger="every 2s"' in page.text  # unfinished: it refreshes itself
    assert 'id="cancel-job"' in page.text and "a red lighthouse at dawn" in page.text
    summary = re.search(r'id="credit-summary">(.*?)</p>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert re.sub(r"\s+", " ", summary).startswith(f"Reserved <strong>{credits(Decimal(str(held)))}</strong>")

    canceled = await post_form(api, f"/app/jobs/{first['id']}/cancel")
    assert canceled.status_code == 303 and canceled.headers["location"] == f"/app/jobs/{first['id']}"
    page = await api.get(f"/app/jobs/{first['id']}")
    assert trail(page.text) == ["reserve", "release"]
    assert 'id="job-state">canceled<' in page.text and 'id="cancel-job"' not in page.text
    assert 'hx-trigger="every 2s"' not in page.text
    assert "Queue wait" in page.text and "Run time" in page.text

    # htmx cancel answers with the detail block.
    partial = await post_form(api, f"/app/jobs/{second['id']}/cancel", headers={"HX-Request": "true"})
    assert partial.status_code == 200 and "<html" not in partial.text and 'id="job-state">canceled<' in partial.text
    # Canceling a canceled job changes nothing (as the API).
    assert (await post_form(api, f"/app/jobs/{first['id']}/cancel")).status_code == 303
    assert trail((await api.get(f"/app/jobs/{first['id']}")).text) == ["reserve", "release"]
    await assert_ledger_ok(db)

    # Filters.
    assert job_ids((await api.get("/app/jobs?status=canceled")).text) == [second["id"], first["id"]]
    assert job_ids((await api.get("/app/jobs?status=succeeded")).text) == []
    assert job_ids((await api.get("/app/jobs?type=image_generation&status=canceled")).text) == [second["id"], first["id"]]
    assert job_ids((await api.get("/app/jobs?type=model_creation")).text) == []
    bad = await api.get("/app/jobs?status=exploded")
    assert bad.status_code == 200 and "Choose one of" in bad.text
    assert "<html" not in (await api.get("/app/jobs?status=canceled", headers={"HX-Request": "true"})).text


async def test_a_succeeded_job_shows_the_charge_its_images_and_log(api_with_worker: httpx.AsyncClient, db: Database) -> None:
    api = api_with_worker
    key = await signed_up_with_key(api)
    free = await generate(api, key)
    await make_paying(db)
    paid = await generate(api, key, prompt="a yellow kite")
    assert paid["status"] == "succeeded" and paid["chargedCredits"] > 0

    page = await api.get(f"/app/jobs/{paid['id']}")
    assert trail(page.text) == ["reserve", "capture"]
    assert "charged" in page.text and f'href="/app/gallery/{paid["images"][0]["id"]}"' in page.text
    assert 'id="job-log"' in page.text and "stored 1 image(s)" in page.text
    assert 'id="cancel-job"' not in page.text and 'placeholder-notice' in page.text
    # A succeeded job cannot be canceled: 409, as an HTML page.
    refused = await post_form(api, f"/app/jobs/{paid['id']}/cancel")
    assert refused.status_code == 409 and "<html" in refused.text and "already finished" in refused.text
    free_page = await api.get(f"/app/jobs/{free['id']}")
    assert "A free generation" in free_page.text and trail(free_page.text) == []

    b = other_client(api)
    await signed_up_with_key(b, "b@example.com")
    assert (await b.get(f"/app/jobs/{paid['id']}")).status_code == 404
    assert (await post_form(b, f"/app/jobs/{paid['id']}/cancel")).status_code == 404
    assert job_ids((await b.get("/app/jobs")).text) == []
