"""The gallery, jobs, credits and webhooks pages in a real browser (Debian's Chromium through
Playwright; ``conftest.py``): images generated through the JSON API with the service's worker
running, a star set with a click and the image found under favourites, the credits page showing
the charge and its CSV downloading, a webhook endpoint added; on a desktop and at 390×844 with
touch (no sideways scrolling), no console errors (a CSP violation is one), screenshots of every
page (``<name>-desktop.png``, ``<name>-phone.png``)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from pixelmint.accounts import service as accounts
from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from tests.web.conftest import no_horizontal_scroll, page_errors
from tests.web.pages import make_paying
from tests.web.test_browser import sign_up

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.allow_private_urls = True  # the webhook endpoint added below is on 127.0.0.1
    return settings


async def paying_team_with_images(db: Database, base: str, email: str) -> dict[str, Any]:
    """After the browser signed up: a paid plan, an API key, two generations through the API
    (the first charged); the second job."""
    await make_paying(db, email)
    async with db.transaction() as session:
        row = (await session.execute(text("SELECT id, team_id FROM users WHERE email = :e"), {"e": email})).one()
        _, key = await accounts.create_api_key(session, team_id=row.team_id, user_id=row.id, name="browser test")
    jobs = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for prompt, seed in (("a red lighthouse at dawn", 11), ("a blue bicycle at night", 12)):
            answer = await client.post("/api/v1/generate", json={
                "referenceModelId": "business-headshot", "prompt": prompt, "resolution": "512x512", "seed": seed,
                "waitForResult": True})
            assert answer.status_code == 200 and answer.json()["job"]["status"] == "succeeded", answer.text
            jobs.append(answer.json()["job"])
    return {"jobs": jobs, "charged": sum(Decimal(str(j["chargedCredits"])) for j in jobs)}


async def test_gallery_star_favourites_credits_csv_and_webhooks_on_a_desktop(
    live_service: str, db: Database, desktop: Any, screenshot: Any, tmp_path: Path,
) -> None:
    page = await desktop.new_page()
    await sign_up(page, live_service, "ada@example.com")
    made = await paying_team_with_images(db, live_service, "ada@example.com")
    second_image = made["jobs"][1]["images"][0]["id"]

    # The gallery: newest first; star the newest with a click (htmx), find it under favourites.
    await page.get_by_role("navigation").get_by_role("link", name="Gallery").first.click()
    await page.wait_for_url(live_service + "/app/gallery")
    assert await page.locator(".gallery-card").count() == 2
    assert await page.locator(".gallery-card").first.get_attribute("data-image-id") == second_image
    assert await page.locator(".placeholder-notice").is_visible()
    await screenshot(page, "gallery")
    star = page.locator(f"#star-{second_image} button")
    await star.click()
    await page.locator(f'#star-{second_image} button[aria-pressed="true"]').wait_for()
    assert page.url == live_service + "/app/gallery"  # swapped in place, no page load
    await page.locator("#favorites-link").click()
    await page.wait_for_url(live_service + "/app/gallery?favorites=1")
    assert [await c.get_attribute("data-image-id") for c in await page.locator(".gallery-card").all()] == [second_image]
    await screenshot(page, "gallery-favourites")

    # The image's page: the PNG's parameters beside it.
    await page.locator(".gallery-card .thumb").first.click()
    await page.locator("#png-params").wait_for()
    assert "a blue bicycle at night" in (await page.text_content("#png-params") or "")
    await screenshot(page, "image")
    await page.goto(f"{live_service}/app/gallery/{second_image}/delete")
    await screenshot(page, "image-delete")

    # Jobs and a job's credit trail.
    await page.goto(live_service + "/app/jobs")
    assert await page.locator("#jobs-table tbody tr").count() == 2
    await screenshot(page, "jobs")
    await page.locator("#jobs-table tbody tr a").first.click()
    await page.locator("#credit-trail").wait_for()
    assert await page.locator('#credit-trail tr[data-type="capture"]').count() == 1
    await screenshot(page, "job")

    # Credits: the charge in the ledger and the chart; the CSV downloads.
    await page.goto(live_service + "/app/credits")
    assert await page.locator('#ledger-table tr[data-type="capture"]').count() == 2
    assert await page.locator("#usage-chart").get_attribute("data-drawn") == "1"  # Chart.js drew it
    await screenshot(page, "credits")
    async with page.expect_download() as info:
        await page.locator("#csv-download").click()
    download = await info.value
    saved = tmp_path / "credits.csv"
    await download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    captured = [r for r in rows if r["type"] == "capture"]
    assert sum(Decimal(r["amount"]) for r in captured) == made["charged"]
    assert {r["jobId"] for r in captured} == {j["id"] for j in made["jobs"]}

    # Webhooks: add an endpoint, its secret shown once; its page.
    await page.goto(live_service + "/app/webhooks")
    await page.fill("#f-url", "http://127.0.0.1:9/hooks")
    await page.locator('input[name="event_types"][value="job.succeeded"]').check()
    await page.get_by_role("button", name="Add endpoint").click()
    assert ((await page.text_content("#new-secret-value")) or "").startswith("whsec_")
    await screenshot(page, "webhooks")
    await page.locator("#endpoints a").first.click()
    await page.locator("#endpoint-state").wait_for()
    await screenshot(page, "webhook")
    assert page_errors(page) == []


async def test_the_pages_fit_a_phone(live_service: str, db: Database, phone: Any, screenshot: Any) -> None:
    page = await phone.new_page()
    await sign_up(page, live_service, "ada@example.com")
    made = await paying_team_with_images(db, live_service, "ada@example.com")
    image = made["jobs"][0]["images"][0]["id"]

    await page.goto(live_service + "/app/gallery")
    await page.locator(f"#star-{image} button").tap()
    await page.locator(f'#star-{image} button[aria-pressed="true"]').wait_for()
    await page.goto(live_service + "/app/webhooks")
    await page.fill("#f-url", "http://127.0.0.1:9/hooks")
    await page.get_by_role("button", name="Add endpoint").tap()
    await page.locator("#new-secret-value").wait_for()
    await no_horizontal_scroll(page)
    endpoint = await page.locator("#endpoints tr").nth(1).get_attribute("data-endpoint-id")

    pages = {
        "gallery": "/app/gallery", "gallery-favourites": "/app/gallery?favorites=1", "image": f"/app/gallery/{image}",
        "image-delete": f"/app/gallery/{image}/delete", "jobs": "/app/jobs", "job": f"/app/jobs/{made['jobs'][0]['id']}",
        "credits": "/app/credits", "webhooks": "/app/webhooks", "webhook": f"/app/webhooks/{endpoint}",
    }
    for name, path in pages.items():
        await page.goto(live_service + path)
        await no_horizontal_scroll(page)
        await screenshot(page, name)
    await page.goto(live_service + "/app/gallery?favorites=1")
    assert await page.locator(".gallery-card").count() == 1
    # The menu leads to the new pages.
    await page.locator("#menu-button").tap()
    await page.locator(".nav-narrow").get_by_role("link", name="Credits").tap()
    await page.wait_for_url(live_service + "/app/credits")
    assert page_errors(page) == []
