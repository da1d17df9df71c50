"""The dashboard in a real browser (Debian's Chromium through Playwright; ``conftest.py``), as one
person's journey on one running service:

On a desktop: the public pages → sign up → the free counter shows 3 → (an administrator gives the
team a paid plan and credits) → an API key made on its page works against the API (and generates
a first image) → an invite link on the team page → the catalog filtered, a card leads to training
→ a custom model trained from images dropped on the form (thumbnails, the estimate following the
number of images) → its page updates by itself until version 1 is ready → refined into version 2
→ generating from version 2, the queue panel reaching done without a reload (server-sent events)
→ the gallery newest first; a star set with a click, the image found under favourites, its page
with the PNG's parameters → the job's credit trail → the credits page shows the charges and its
CSV downloads with them → a webhook endpoint added → the HTML 404 page → sign out (the dashboard
then asks to sign in) → the invite and set-password pages signed out.

Then on a phone (390×844, touch): every one of those pages with no sideways scrolling; the menu
opens with a tap and leads to the pages; a key, a generation, a star and a webhook endpoint made
by touch; sign out from the menu.

No console errors on either (a CSP violation is one). Screenshots of every page,
``<name>-desktop.png`` and ``<name>-phone.png``, in the screenshots folder (``conftest.py``;
``index.txt`` there lists them).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from pixelmint.accounts import people
from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from tests.builders import solid_png
from tests.web.conftest import no_horizontal_scroll, page_errors
from tests.web.helpers import PASSWORD
from tests.web.paying import make_paying

pytestmark = pytest.mark.slow

EMAIL = "ada@example.com"
WAIT = 60_000  # ms: the longest a page may take to show a job's outcome
PUBLIC_PAGES = {"landing": "/", "sign-in": "/login", "sign-up": "/signup"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The placeholder renderer takes a moment per image, so a job is seen queued or running; the
    webhook endpoint added below is on 127.0.0.1."""
    return settings.model_copy(update={"procedural_delay_seconds": 1.0, "allow_private_urls": True})


async def sign_up(page: Any, base: str, email: str) -> None:
    await page.goto(base + "/")
    await page.get_by_text("Sign up free").click()
    await page.fill("#f-email", email)
    await page.fill("#f-password", PASSWORD)
    await page.fill("#f-name", "Ada")
    await page.fill("#f-team", "Analytical Engines")
    await page.get_by_role("button", name="Sign up").click()
    await page.wait_for_url(base + "/app")


async def drop_images(page: Any, selector: str, count: int) -> None:
    """Drop ``count`` PNG files on the element, as a person dragging them from their files would."""
    pngs = [base64.b64encode(solid_png((40 * i % 255, 120, 200), stripes=True)).decode() for i in range(count)]
    transfer = await page.evaluate_handle("""(pngs) => {
        const transfer = new DataTransfer();
        pngs.forEach((data, i) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            transfer.items.add(new File([bytes], `look-${i}.png`, {type: "image/png"}));
        });
        return transfer;
    }""", pngs)
    await page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


async def visit(page: Any, base: str, path: str, name: str, screenshot: Any, status: int = 200) -> None:
    """Open the page (answering ``status``), on a phone check it does not scroll sideways, and
    screenshot it as ``name``."""
    response = await page.goto(base + path)
    assert response is not None and response.status == status, (path, response and response.status)
    if page.context.device_name == "phone":
        await no_horizontal_scroll(page)
    await screenshot(page, name)


async def available(client: httpx.AsyncClient, key: str) -> Decimal:
    balance = await client.get("/api/v1/credits/balance", headers={"Authorization": f"Bearer {key}"})
    assert balance.status_code == 200, balance.text
    return Decimal(str(balance.json()["availableCredits"]))


async def test_the_journey_on_a_desktop_then_its_pages_on_a_phone(
    live_service: str, db: Database, desktop: Any, phone: Any, screenshot: Any, tmp_path: Path,
) -> None:
    base = live_service
    page = await desktop.new_page()
    for name, path in PUBLIC_PAGES.items():
        await visit(page, base, path, name, screenshot)

    # Sign up from the landing page: the free counter shows 3.
    await sign_up(page, base, EMAIL)
    assert (await page.text_content("#free-generations") or "").strip() == "3"
    await screenshot(page, "home")

    # An administrator moves the team to a paid plan with credits; the free generations are spent,
    # so every generation below is charged.
    await make_paying(db, EMAIL, credits="1000", plan="basic")
    async with db.transaction() as session:
        await session.execute(text("UPDATE users SET free_generations_remaining = 0 WHERE email = :e"), {"e": EMAIL})

    # An API key made on its page (htmx swaps the keys block in) works against the API.
    await page.get_by_role("navigation").get_by_role("link", name="API keys").first.click()
    await page.wait_for_url(base + "/app/keys")
    await page.fill("input[name=name]", "laptop")
    await page.get_by_role("button", name="Create key").click()
    key = ((await page.text_content("#new-key-value", timeout=10_000)) or "").strip()
    assert key.startswith("pm_")
    assert await page.locator("#keys-table").get_by_text("laptop").count() == 1
    await screenshot(page, "keys")
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        before = await available(client, key)
        answer = await client.post("/api/v1/generate", headers={"Authorization": f"Bearer {key}"}, json={
            "referenceModelId": "business-headshot", "prompt": "a red lighthouse at dawn", "resolution": "512x512",
            "seed": 11, "waitForResult": True})
        assert answer.status_code == 200 and answer.json()["job"]["status"] == "succeeded", answer.text
        api_job = answer.json()["job"]

    # The team page: an invite link (opened signed out at the end).
    await page.goto(base + "/app/team")
    await page.get_by_role("button", name="Create invite link").click()
    invite_link = ((await page.text_content("#invite-link-value")) or "").strip()
    assert "/invite?token=" in invite_link
    await screenshot(page, "team")

    # The catalog: filtered by category (htmx swaps the results in); a card leads to training a model from it.
    await page.locator(".nav-wide").get_by_role("link", name="Catalog").click()
    await page.wait_for_url(base + "/app/catalog")
    await page.select_option("select[name=category]", "fashion")
    await page.wait_for_function("() => [...document.querySelectorAll('#catalog-grid .badge')].every(b => b.textContent === 'fashion')")
    await screenshot(page, "catalog")
    await page.locator(".model-card").first.get_by_role("button", name="Train from it").click()
    await page.wait_for_url("**/app/models/new?referenceModelId=*")

    # The new-model form: dropped images get thumbnails, and the estimate counts them (beyond 5: +0.5 each).
    estimate_before = await page.text_content("#estimate-cost")
    await page.fill("#f-name", "Autumn campaign")
    await page.fill("#f-triggerWord", "ohwx")
    await drop_images(page, "[data-dropzone]", 7)
    await page.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 7")
    await page.wait_for_function(f"() => document.querySelector('#estimate-cost').textContent !== {estimate_before!r}")
    await screenshot(page, "model-new")
    await page.get_by_role("button", name="Start training").click()
    await page.wait_for_url("**/app/models/*")
    model_path = page.url.removeprefix(base)

    # The model's page updates itself until version 1 exists (no reload by the test); refine it into version 2.
    await page.wait_for_selector("#version-1", timeout=WAIT)
    await page.fill("#f-prompt", "warmer light, more grain")
    await page.get_by_role("button", name="Refine into v2").click()
    await page.wait_for_selector("#version-2", timeout=WAIT)
    assert "warmer light, more grain" in (await page.text_content("#version-2") or "")
    await screenshot(page, "model")

    # Generate from version 2: the job appears in the queue and goes to done without a reload.
    await page.locator("#version-2").get_by_text("Generate from v2").click()
    await page.wait_for_url("**/app/generate?customModelId=*&version=2")
    assert (await page.input_value("#f-model")).endswith(":2")
    await page.fill("#f-prompt", "a coat on a rainy street")
    await page.select_option("#f-resolution", "512x512")
    await page.select_option("#f-numImages", "2")
    await page.wait_for_function("() => document.querySelector('#estimate-cost').textContent.trim() !== ''")
    await page.evaluate("window.pixelmintNoReload = true")
    await page.get_by_role("button", name="Generate").click()
    job = page.locator("article.job-new")
    await job.wait_for()
    assert await job.get_attribute("sse-connect") is not None  # queued or running: a live stream
    v2_job_id = ((await job.get_attribute("id")) or "").removeprefix("job-")
    await page.locator("article.job-new .status-succeeded").wait_for(timeout=WAIT)
    assert await page.evaluate("window.pixelmintNoReload === true")  # the same page all along
    assert await page.locator("article.job-new img.result").count() == 2
    await page.wait_for_function(
        "() => [...document.querySelectorAll('article.job-new img.result')].every(i => i.complete && i.naturalWidth > 0)")
    assert await page.locator(".placeholder-notice").count() >= 1
    await screenshot(page, "generate")

    await page.goto(base + "/app/models")
    assert await page.locator("#models-table .status-ready").count() == 1
    await screenshot(page, "models")
    await visit(page, base, model_path + "/delete", "model-delete", screenshot)

    # The gallery: newest first (version 2's images, then the API's); star the newest with a click
    # (swapped in place), find it under favourites.
    await page.get_by_role("navigation").get_by_role("link", name="Gallery").first.click()
    await page.wait_for_url(base + "/app/gallery")
    cards = [await c.get_attribute("data-image-id") for c in await page.locator(".gallery-card").all()]
    assert len(cards) == 3 and cards[2] == api_job["images"][0]["id"]
    assert await page.locator(".placeholder-notice").is_visible()
    await screenshot(page, "gallery")
    newest = cards[0]
    await page.locator(f"#star-{newest} button").click()
    await page.locator(f'#star-{newest} button[aria-pressed="true"]').wait_for()
    assert page.url == base + "/app/gallery"  # no page load
    await page.locator("#favorites-link").click()
    await page.wait_for_url(base + "/app/gallery?favorites=1")
    assert [await c.get_attribute("data-image-id") for c in await page.locator(".gallery-card").all()] == [newest]
    await screenshot(page, "gallery-favourites")

    # The image's page: the PNG's parameters beside it.
    await page.locator(".gallery-card .thumb").first.click()
    await page.locator("#png-params").wait_for()
    assert "a coat on a rainy street" in (await page.text_content("#png-params") or "")
    await screenshot(page, "image")
    await visit(page, base, f"/app/gallery/{newest}/delete", "image-delete", screenshot)

    # Jobs and the version-2 job's credit trail (reserved, then captured).
    await page.goto(base + "/app/jobs")
    assert await page.locator(f'#jobs-table tr[data-job-id="{v2_job_id}"]').count() == 1
    assert await page.locator(f'#jobs-table tr[data-job-id="{api_job["id"]}"]').count() == 1
    await screenshot(page, "jobs")
    await page.locator(f'#jobs-table tr[data-job-id="{v2_job_id}"] a').click()
    await page.locator("#credit-trail").wait_for()
    assert await page.locator('#credit-trail tr[data-type="capture"]').count() == 1
    await screenshot(page, "job")

    # Credits: the charges in the ledger (the generations' among them) and the chart; the CSV downloads them.
    await page.locator(".nav-wide").get_by_role("link", name="Credits").click()
    await page.wait_for_url(base + "/app/credits")
    for job_id in (v2_job_id, api_job["id"]):
        assert await page.locator(f'#ledger-table tr[data-type="capture"]:has(a[href="/app/jobs/{job_id}"])').count() == 1
    assert await page.locator("#usage-chart").get_attribute("data-drawn") == "1"  # Chart.js drew it
    await screenshot(page, "credits")
    async with page.expect_download() as info:
        await page.locator("#csv-download").click()
    download = await info.value
    assert download.suggested_filename == "credit-history.csv"
    saved = tmp_path / "credits.csv"
    await download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    captured = [r for r in rows if r["type"] == "capture"]
    assert {v2_job_id, api_job["id"]} <= {r["jobId"] for r in captured}
    assert next(Decimal(r["amount"]) for r in captured if r["jobId"] == api_job["id"]) == Decimal(str(api_job["chargedCredits"]))
    async with httpx.AsyncClient(base_url=base) as client:
        spent = before - await available(client, key)
    assert sum(Decimal(r["amount"]) for r in captured) == spent > 0  # every charge since the key, and only those

    # Webhooks: add an endpoint, its secret shown once; its page; the delete confirmation.
    await page.goto(base + "/app/webhooks")
    await page.fill("#f-url", "http://127.0.0.1:9/hooks")
    await page.locator('input[name="event_types"][value="job.succeeded"]').check()
    await page.get_by_role("button", name="Add endpoint").click()
    assert ((await page.text_content("#new-secret-value")) or "").startswith("whsec_")
    await screenshot(page, "webhooks")
    await page.locator("#endpoints a").first.click()
    await page.locator("#endpoint-state").wait_for()
    endpoint_path = page.url.removeprefix(base)
    await screenshot(page, "webhook")
    await visit(page, base, endpoint_path + "/delete", "webhook-delete", screenshot)
    assert page_errors(page) == [], page_errors(page)

    # Sign out: the dashboard then asks to sign in; the invite and set-password pages, signed out.
    await page.locator(".nav-wide").get_by_role("button", name="Sign out").click()
    await page.wait_for_url(base + "/")
    await page.goto(base + "/app")
    assert "/login" in page.url
    async with db.transaction() as session:
        user_id = (await session.execute(text("SELECT id FROM users WHERE email = :e"), {"e": EMAIL})).scalar_one()
        password_token = await people.create_password_token(session, user_id=user_id, lifetime=dt.timedelta(hours=1))
    signed_out_pages = {"invite": invite_link.removeprefix(base), "set-password": f"/set-password?token={password_token}"}
    for name, path in signed_out_pages.items():
        await visit(page, base, path, name, screenshot)
    assert page_errors(page) == [], page_errors(page)
    missing = await desktop.new_page()  # the browser logs the 404 itself: a page of its own
    await visit(missing, base, "/app/no-such-page", "not-found", screenshot, status=404)
    assert await missing.locator("h1").text_content() == "Not found"

    # ---- The same pages on a phone: no sideways scrolling, the menu reachable, generating by touch.
    mobile = await phone.new_page()
    for name, path in {**PUBLIC_PAGES, **signed_out_pages}.items():
        await visit(mobile, base, path, name, screenshot)
    await mobile.goto(base + "/login")
    await mobile.fill("#f-email", EMAIL)
    await mobile.fill("#f-password", PASSWORD)
    await mobile.get_by_role("button", name="Sign in").tap()
    await mobile.wait_for_url(base + "/app")
    image = cards[1]
    signed_in_pages = {
        "home": "/app", "keys": "/app/keys", "team": "/app/team", "catalog": "/app/catalog", "models": "/app/models",
        "model-new": "/app/models/new", "model": model_path, "model-delete": model_path + "/delete",
        "gallery": "/app/gallery", "gallery-favourites": "/app/gallery?favorites=1", "image": f"/app/gallery/{image}",
        "image-delete": f"/app/gallery/{image}/delete", "jobs": "/app/jobs", "job": f"/app/jobs/{v2_job_id}",
        "credits": "/app/credits", "webhooks": "/app/webhooks", "webhook": endpoint_path,
        "webhook-delete": endpoint_path + "/delete",
    }
    for name, path in signed_in_pages.items():
        await visit(mobile, base, path, name, screenshot)

    # The wide navigation is hidden; the menu opens with a tap and leads to the pages.
    await mobile.goto(base + "/app")
    assert not await mobile.locator(".nav-wide").is_visible()
    await mobile.locator("#menu-button").tap()
    await mobile.locator(".nav-narrow").get_by_role("link", name="API keys").tap()
    await mobile.wait_for_url(base + "/app/keys")
    await mobile.fill("input[name=name]", "phone")
    await mobile.get_by_role("button", name="Create key").tap()
    assert ((await mobile.text_content("#new-key-value", timeout=10_000)) or "").startswith("pm_")
    await no_horizontal_scroll(mobile)
    await screenshot(mobile, "keys-created")

    # Generating by touch.
    await mobile.locator("#menu-button").tap()
    await mobile.locator(".nav-narrow").get_by_role("link", name="Generate").tap()
    await mobile.wait_for_url(base + "/app/generate")
    await mobile.fill("#f-prompt", "a red bicycle at dawn")
    await mobile.locator("#generate-button").tap()
    await mobile.locator("article.job-new .status-succeeded").wait_for(timeout=WAIT)
    await mobile.locator("article.job-new img.result").first.wait_for()
    await no_horizontal_scroll(mobile)
    await screenshot(mobile, "generate")

    # A star by touch: two favourites now.
    await mobile.goto(base + "/app/gallery")
    await mobile.locator(f"#star-{image} button").tap()
    await mobile.locator(f'#star-{image} button[aria-pressed="true"]').wait_for()
    await mobile.goto(base + "/app/gallery?favorites=1")
    assert {await c.get_attribute("data-image-id") for c in await mobile.locator(".gallery-card").all()} == {newest, image}

    # A webhook endpoint by touch; its secret fits the screen.
    await mobile.goto(base + "/app/webhooks")
    await mobile.fill("#f-url", "http://127.0.0.1:9/phone")
    await mobile.get_by_role("button", name="Add endpoint").tap()
    await mobile.locator("#new-secret-value").wait_for()
    await no_horizontal_scroll(mobile)

    await mobile.locator("#menu-button").tap()
    await mobile.locator(".nav-narrow").get_by_role("link", name="Credits").tap()
    await mobile.wait_for_url(base + "/app/credits")
    await mobile.locator("#menu-button").tap()
    await mobile.locator(".nav-narrow").get_by_role("button", name="Sign out").tap()
    await mobile.wait_for_url(base + "/")
    assert page_errors(mobile) == [], page_errors(mobile)
    missing = await phone.new_page()
    await visit(missing, base, "/app/no-such-page", "not-found", screenshot, status=404)
