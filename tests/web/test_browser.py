"""The dashboard in a real browser (Debian's Chromium, through Playwright; ``conftest.py``): the
sign-up journey on a desktop, the same pages on a phone (no sideways scrolling, the menu reachable),
no console errors (a CSP violation is one), and screenshots of every page in the screenshots folder.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.web.conftest import no_horizontal_scroll, page_errors
from tests.web.helpers import PASSWORD

pytestmark = pytest.mark.slow

PUBLIC_PAGES = {"landing": "/", "sign-in": "/login", "sign-up": "/signup"}
SIGNED_IN_PAGES = {"home": "/app", "keys": "/app/keys", "team": "/app/team"}


async def sign_up(page: Any, base: str, email: str) -> None:
    await page.goto(base + "/")
    await page.get_by_text("Sign up free").click()
    await page.fill("#f-email", email)
    await page.fill("#f-password", PASSWORD)
    await page.fill("#f-name", "Ada")
    await page.fill("#f-team", "Analytical Engines")
    await page.get_by_role("button", name="Sign up").click()
    await page.wait_for_url(base + "/app")


async def test_sign_up_home_create_a_key_sign_out_on_a_desktop(live_service: str, desktop: Any, screenshot: Any) -> None:
    page = await desktop.new_page()
    for name, path in PUBLIC_PAGES.items():
        await page.goto(live_service + path)
        await screenshot(page, name)

    await sign_up(page, live_service, "ada@example.com")
    assert (await page.text_content("#free-generations") or "").strip() == "3"
    await screenshot(page, "home")

    await page.get_by_role("navigation").get_by_role("link", name="API keys").first.click()
    await page.wait_for_url(live_service + "/app/keys")
    await page.fill("input[name=name]", "laptop")
    await page.get_by_role("button", name="Create key").click()  # htmx swaps the keys block in
    key = ((await page.text_content("#new-key-value", timeout=10_000)) or "").strip()
    assert key.startswith("pm_")
    assert await page.locator("#keys-table").get_by_text("laptop").count() == 1
    await screenshot(page, "keys")
    async with httpx.AsyncClient(base_url=live_service) as client:
        balance = await client.get("/api/v1/credits/balance", headers={"Authorization": f"Bearer {key}"})
    assert balance.status_code == 200

    await page.goto(live_service + "/app/team")
    await page.get_by_role("button", name="Create invite link").click()
    assert "/invite?token=" in ((await page.text_content("#invite-link-value")) or "")
    await screenshot(page, "team")

    await page.locator(".nav-wide").get_by_role("button", name="Sign out").click()
    await page.wait_for_url(live_service + "/")
    await page.goto(live_service + "/app")
    assert "/login" in page.url
    assert page_errors(page) == []


async def test_the_pages_fit_a_phone_and_the_menu_is_reachable(live_service: str, phone: Any, screenshot: Any) -> None:
    page = await phone.new_page()
    for name, path in PUBLIC_PAGES.items():
        await page.goto(live_service + path)
        await no_horizontal_scroll(page)
        await screenshot(page, name)

    await sign_up(page, live_service, "ada@example.com")
    for name, path in SIGNED_IN_PAGES.items():
        await page.goto(live_service + path)
        await no_horizontal_scroll(page)
        await screenshot(page, name)

    # The wide navigation is hidden; the menu opens with a tap and leads to every page.
    await page.goto(live_service + "/app")
    assert not await page.locator(".nav-wide").is_visible()
    await page.locator("#menu-button").tap()
    await page.locator(".nav-narrow").get_by_role("link", name="API keys").tap()
    await page.wait_for_url(live_service + "/app/keys")
    await page.fill("input[name=name]", "phone")
    await page.get_by_role("button", name="Create key").tap()
    assert ((await page.text_content("#new-key-value", timeout=10_000)) or "").startswith("pm_")
    await no_horizontal_scroll(page)
    await screenshot(page, "keys-created")
    await page.locator("#menu-button").tap()
    await page.locator(".nav-narrow").get_by_role("button", name="Sign out").tap()
    await page.wait_for_url(live_service + "/")
    assert page_errors(page) == []
