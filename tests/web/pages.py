"""Helpers for the gallery, jobs, credits and webhooks page tests: a signed-up team with an API
key, images generated through the JSON API, ids found in pages."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text

from pixelmint.billing import service as billing
from pixelmint.kit.db import Database
from tests.web.helpers import post_form, shown_secret, sign_up


async def signed_up_with_key(client: httpx.AsyncClient, email: str = "ada@example.com") -> dict[str, str]:
    """Sign up (a team on the free plan, 3 free generations) and create an API key; its headers."""
    await sign_up(client, email)
    page = await post_form(client, "/app/keys", {"name": "tests"})
    assert page.status_code == 201, page.text
    return {"Authorization": f"Bearer {shown_secret(page.text, 'new-key-value')}"}


async def team_id(db: Database, email: str = "ada@example.com") -> uuid.UUID:
    async with db.transaction() as session:
        found = await session.scalar(text("SELECT team_id FROM users WHERE email = :e"), {"e": email})
    assert found is not None
    return found


async def make_paying(db: Database, email: str = "ada@example.com", plan: str = "basic") -> uuid.UUID:
    """Move the person's team to a paid plan with its monthly credits and spend their free
    generations, so that the next generation is charged."""
    team = await team_id(db, email)
    async with db.transaction() as session:
        await billing.change_plan(session, team_id=team, plan_code=plan, replenish_now=True)
        await session.execute(text("UPDATE users SET free_generations_remaining = 0 WHERE email = :e"), {"e": email})
    return team


async def generate(client: httpx.AsyncClient, key: dict[str, str], **body: Any) -> dict[str, Any]:
    """A generation through ``POST /api/v1/generate`` waiting for its result (a worker must run)."""
    payload = {"referenceModelId": "business-headshot", "prompt": "a red lighthouse at dawn", "resolution": "512x512",
               "waitForResult": True, **body}
    answer = await client.post("/api/v1/generate", json=payload, headers=key)
    assert answer.status_code in (200, 201, 202), answer.text
    return dict(answer.json()["job"])


def image_ids(html: str) -> list[str]:
    return re.findall(r'data-image-id="([0-9a-f-]{36})"', html)


def credits_of(value: str | Decimal) -> Decimal:
    return Decimal(str(value))
