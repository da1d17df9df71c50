"""Catalog, custom models and generate in a real browser (Debian's Chromium; ``conftest.py``):
sign up → the team gets credits and a paid plan (as an administrator would) → train a custom model
from images dropped on the form (thumbnails, the estimate following the number of images) → the
model's page updates by itself until it is ready → refine it → generate from version 2 and watch
the queue panel reach done without a reload (server-sent events) → the images show. Then every
page at a phone's size (no sideways scrolling), generating there by touch. Screenshots of every
page, desktop and phone; no console errors (the CSP blocked nothing)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from tests.builders import solid_png
from tests.web.conftest import no_horizontal_scroll, page_errors
from tests.web.helpers import PASSWORD
from tests.web.paying import make_paying
from tests.web.test_browser import sign_up

pytestmark = pytest.mark.slow

EMAIL = "ada@example.com"
WAIT = 60_000  # ms: the longest a page may take to show a job's outcome


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The placeholder renderer takes a moment per image, so a job is seen queued or running."""
    return settings.model_copy(update={"procedural_delay_seconds": 1.0})


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


async def test_train_refine_and_generate_from_version_2(
    live_service: str, db: Database, desktop: Any, phone: Any, screenshot: Any,
) -> None:
    page = await desktop.new_page()
    await sign_up(page, live_service, EMAIL)
    await make_paying(db, EMAIL, credits="1000", plan="basic")

    # The catalog: a card leads to training a model from it.
    await page.locator(".nav-wide").get_by_role("link", name="Catalog").click()
    await page.wait_for_url(live_service + "/app/catalog")
    await page.select_option("select[name=category]", "fashion")  # htmx swaps the results in
    await page.wait_for_function("() => [...document.querySelectorAll('#catalog-grid .badge')].every(b => b.textContent === 'fashion')")
    await screenshot(page, "catalog")
    await page.locator(".model-card").first.get_by_role("button", name="Train from it").click()
    await page.wait_for_url("**/app/models/new?referenceModelId=*")

    # The new-model form: dropped images get thumbnails, and the estimate counts them (beyond 5: +0.5 each).
    before = await page.text_content("#estimate-cost")
    await page.fill("#f-name", "Autumn campaign")
    await page.fill("#f-triggerWord", "ohwx")
    await drop_images(page, "[data-dropzone]", 7)
    await page.wait_for_function("() => document.querySelectorAll('#thumbs img').length === 7")
    await page.wait_for_function(f"() => document.querySelector('#estimate-cost').textContent !== {before!r}")
    await screenshot(page, "model-new")
    await page.get_by_role("button", name="Start training").click()
    await page.wait_for_url("**/app/models/*")
    model_url = page.url

    # The page updates itself until version 1 exists; then refine it into version 2.
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
    await page.locator("article.job-new .status-succeeded").wait_for(timeout=WAIT)
    assert await page.evaluate("window.pixelmintNoReload === true")  # the same page all along
    images = page.locator("article.job-new img.result")
    assert await images.count() == 2
    await page.wait_for_function(
        "() => [...document.querySelectorAll('article.job-new img.result')].every(i => i.complete && i.naturalWidth > 0)")
    assert await page.locator(".placeholder-notice").count() >= 1
    await screenshot(page, "generate")

    await page.goto(live_service + "/app/models")
    assert await page.locator("#models-table .status-ready").count() == 1
    await screenshot(page, "models")
    await page.goto(model_url + "/delete")
    await screenshot(page, "model-delete")
    assert page_errors(page) == [], page_errors(page)

    # The same pages on a phone: no sideways scrolling; generating works by touch.
    mobile = await phone.new_page()
    await mobile.goto(live_service + "/login")
    await mobile.fill("#f-email", EMAIL)
    await mobile.fill("#f-password", PASSWORD)
    await mobile.get_by_role("button", name="Sign in").tap()
    await mobile.wait_for_url(live_service + "/app")
    for name, path in {"catalog": "/app/catalog", "models": "/app/models", "model-new": "/app/models/new",
                       "model": model_url.removeprefix(live_service), "model-delete": model_url.removeprefix(live_service) + "/delete",
                       "generate": "/app/generate"}.items():
        await mobile.goto(live_service + path)
        await no_horizontal_scroll(mobile)
        if name != "generate":
            await screenshot(mobile, name)
    await mobile.fill("#f-prompt", "a red bicycle at dawn")
    await mobile.locator("#generate-button").tap()
    await mobile.locator("article.job-new .status-succeeded").wait_for(timeout=WAIT)
    await mobile.locator("article.job-new img.result").first.wait_for()
    await no_horizontal_scroll(mobile)
    await screenshot(mobile, "generate")
    assert page_errors(mobile) == []
