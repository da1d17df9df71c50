"""Per-process caches (``kit/cache.py``) and what the hot paths keep in them: a change is seen at
once by the process that made it, and by every other process when the change's notification
arrives (``jobs/events.JobEvents`` listens)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg
import httpx
from sqlalchemy import text

from pixelmint.accounts import service as accounts
from pixelmint.credits import apps
from pixelmint.kit import cache
from pixelmint.kit.cache import TtlCache
from pixelmint.kit.db import Database, asyncpg_connect_kwargs
from tests.builders import auth, make_team


def test_a_read_that_started_before_an_invalidation_is_not_stored() -> None:
    c: TtlCache[int] = TtlCache(f"test-generation-{uuid.uuid4()}", 60)  # a fresh name per run
    before = c.generation
    c.clear()
    c.put("k", 1, before)
    assert c.get("k") is None
    c.put("k", 1, c.generation)
    assert c.get("k") == 1
    cache.clear_local(c.name)
    assert c.get("k") is None
    cache.clear_local("a-cache-of-another-version")  # ignored


def test_entries_expire_after_the_ttl() -> None:
    c: TtlCache[int] = TtlCache(f"test-ttl-{uuid.uuid4()}", 0)
    c.put("k", 1, c.generation)
    assert c.get("k") is None


async def test_a_revoked_key_is_refused_at_once(api: httpx.AsyncClient, db: Database) -> None:
    team = await make_team(db)
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).status_code == 200  # cached
    async with db.transaction() as session:
        [(key, _user)] = await accounts.list_api_keys(session, team.team_id)
        await accounts.revoke_api_key(session, team_id=team.team_id, key_id=key.id)
    response = await api.get("/api/v1/credits/balance", headers=auth(team))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_api_key"


async def test_a_key_revoked_by_another_process_is_refused_once_its_notification_arrives(
    api: httpx.AsyncClient, db: Database, database_url: str
) -> None:
    team = await make_team(db)
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).status_code == 200  # cached
    cleared = asyncio.Event()
    stop_watching = accounts._principals.watch(cleared.set)
    try:
        # Another process: its own connection revokes the key and notifies, as cache.invalidate
        # does, without touching this process's cache.
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(database_url))
        try:
            async with conn.transaction():
                await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE team_id = $1", team.team_id)
                await conn.execute("SELECT pg_notify($1, 'api_keys')", cache.CHANNEL)
        finally:
            await conn.close()
        await asyncio.wait_for(cleared.wait(), 30)
    finally:
        stop_watching()
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).status_code == 401


async def test_a_plan_change_applies_to_the_next_request(api: httpx.AsyncClient, db: Database) -> None:
    from pixelmint.billing import service as billing

    team = await make_team(db, plan="free", credits="100")
    body = {"referenceModelId": "business-headshot", "prompt": "a lighthouse", "resolution": "512x512"}
    refused = await api.post("/api/v1/generate", json=body, headers=auth(team))
    assert refused.status_code == 403, refused.text  # the free plan runs only free generations
    async with db.transaction() as session:
        await billing.change_plan(session, team_id=team.team_id, plan_code="basic", reason="test")
    assert (await api.post("/api/v1/generate", json=body, headers=auth(team))).status_code == 202


async def test_a_keys_last_use_is_recorded(api: httpx.AsyncClient, db: Database) -> None:
    team = await make_team(db)
    async with db.transaction() as session:
        assert await session.scalar(text("SELECT last_used_at FROM api_keys WHERE team_id = :t"), {"t": team.team_id}) is None
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).status_code == 200
    async with db.transaction() as session:
        last_used = await session.scalar(text("SELECT last_used_at FROM api_keys WHERE team_id = :t"), {"t": team.team_id})
    assert last_used is not None


async def test_a_withdrawn_grant_and_a_new_price_apply_to_the_next_charge(api: httpx.AsyncClient, db: Database) -> None:
    team = await make_team(db, credits="100")
    async with db.transaction() as session:
        app = await apps.register_app(session, name="deck-app", operations={"deck": Decimal("2")})
        await apps.authorize_app(session, team_id=team.team_id, app_id=app.app_id, granted_by="admin")
    headers = {"Authorization": f"Bearer {app.service_key}"}
    body = {"teamId": str(team.team_id), "operation": "deck"}
    first = await api.post("/api/v1/credits/consume", json=body, headers=headers)
    assert first.status_code == 200 and first.json()["consumedCredits"] == 2, first.text
    async with db.transaction() as session:
        await apps.set_operation_costs(session, app.app_id, {"deck": Decimal("3")})
    second = await api.post("/api/v1/credits/consume", json=body, headers=headers)
    assert second.status_code == 200 and second.json()["consumedCredits"] == 3, second.text
    async with db.transaction() as session:
        await apps.revoke_app(session, team_id=team.team_id, app_id=app.app_id)
    third = await api.post("/api/v1/credits/consume", json=body, headers=headers)
    assert third.status_code == 403 and third.json()["error"] == "app_not_authorized", third.text
