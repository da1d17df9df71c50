"""Helpers for dashboard tests through httpx: CSRF tokens, form posts, sign-up and sign-in."""

from __future__ import annotations

import re

import httpx

PASSWORD = "correct horse battery"


async def csrf(client: httpx.AsyncClient) -> str:
    """The client's CSRF token (a page visit sets the cookie first when needed)."""
    if "csrftoken" not in client.cookies:
        await client.get("/login")
    return client.cookies["csrftoken"]


async def post_form(client: httpx.AsyncClient, url: str, data: dict[str, str] | None = None,
                    **kwargs: object) -> httpx.Response:
    """A form post with the CSRF token, as the page's form sends it."""
    return await client.post(url, data={"csrftoken": await csrf(client), **(data or {})}, **kwargs)  # type: ignore[arg-type]


async def sign_up(client: httpx.AsyncClient, email: str = "ada@example.com", password: str = PASSWORD,
                  **fields: str) -> httpx.Response:
    page = await post_form(client, "/signup", {"email": email, "password": password, **fields})
    assert page.status_code == 303, page.text
    return page


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await post_form(client, "/login", {"email": email, "password": password})


def other_client(client: httpx.AsyncClient, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """Another browser on the same app (its own cookies)."""
    return httpx.AsyncClient(transport=client._transport, base_url=base_url)  # noqa: SLF001 - same ASGI app


def shown_secret(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">([^<]+)<', html)
    assert match, f"no #{element_id} in the page"
    return match.group(1).strip()
