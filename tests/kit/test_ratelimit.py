"""Rate limits (kit/ratelimit.py) per API key and per team, in memory and (when ``REDIS_URL`` is
set) in Redis. Tiny moving-window limits: the tests never wait for a window to pass."""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from typing import Any

import pytest
from limits.aio.storage import MemoryStorage
from sqlalchemy import text

from pixelmint.accounts.service import hash_api_key, new_api_key
from pixelmint.accounts.tables import ApiKey
from pixelmint.credits import apps
from pixelmint.credits.app_endpoints import consume
from pixelmint.credits.auth import spending_caller
from pixelmint.credits.schemas import ConsumeOut
from pixelmint.kit.http import rate_limit
from pixelmint.kit.ratelimit import RateLimiter, ScopeLimits, parse_limits
from tests.builders import auth, generate_body, make_app, make_team

GENERATE = "/api/v1/generate"


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str | None:
    """None (memory storage), or the Redis of ``REDIS_URL`` (skipped when it is not set)."""
    if request.param == "memory":
        return None
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    return url


async def test_over_the_key_limit_is_429_with_retry_after(client_with, db, redis_url) -> None:
    async with client_with(redis_url=redis_url, rate_limit_generate="2/minute", rate_limit_generate_team="") as api:
        team = await make_team(db, credits="100")
        codes = [(await api.post(GENERATE, json=generate_body(), headers=auth(team))).status_code for _ in range(2)]
        limited = await api.post(GENERATE, json=generate_body(), headers={**auth(team), "Idempotency-Key": "later"})
        assert codes == [202, 202] and limited.status_code == 429
        body = limited.json()
        assert body["error"] == "rate_limited" and body["scope"] == "generate" and body["limit"] == "2 per 1 minute"
        assert 1 <= int(limited.headers["retry-after"]) <= 60 and body["retryAfter"] == int(limited.headers["retry-after"])
        other = await make_team(db, credits="100", name="other")
        assert (await api.post(GENERATE, json=generate_body(), headers=auth(other))).status_code == 202
        async with db.transaction() as session:
            assert await session.scalar(text("SELECT count(*) FROM jobs WHERE team_id = :t"), {"t": team.team_id}) == 2
            # A rate-limited request never reached the idempotency claim: its key is unused.
            assert await session.scalar(text("SELECT count(*) FROM idempotency_keys")) == 0


async def test_the_team_limit_counts_all_its_keys(client_with, db, redis_url) -> None:
    async with client_with(redis_url=redis_url, rate_limit_generate="5/minute", rate_limit_generate_team="2/minute") as api:
        team = await make_team(db, credits="100")
        second_key = new_api_key()
        async with db.transaction() as session:
            session.add(ApiKey(team_id=team.team_id, user_id=team.user_id, key_hash=hash_api_key(second_key),
                               prefix=second_key[:10], name="second"))
        second = {"Authorization": f"Bearer {second_key}"}
        assert (await api.post(GENERATE, json=generate_body(), headers=auth(team))).status_code == 202
        assert (await api.post(GENERATE, json=generate_body(), headers=second)).status_code == 202
        limited = await api.post(GENERATE, json=generate_body(), headers=second)
        assert limited.status_code == 429 and "team" in limited.json()["message"]
        assert "retry-after" in limited.headers


async def test_custom_model_create_and_refine_share_the_generate_limits(client_with, db) -> None:
    async with client_with(redis_url=None, rate_limit_generate="2/minute", rate_limit_generate_team="") as api:
        team = await make_team(db, credits="100")
        create = await api.post("/api/v1/models", json={}, headers=auth(team))
        refine = await api.post(f"/api/v1/models/{uuid.uuid4()}/refine", json={"prompt": "x"}, headers=auth(team))
        assert (create.status_code, refine.status_code) == (422, 404)  # counted, then rejected by the endpoint
        limited = await api.post(GENERATE, json=generate_body(), headers=auth(team))
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"


async def test_consume_is_limited_per_app_key_and_per_team_named_in_the_body(client_with, db) -> None:
    async with client_with(redis_url=None, rate_limit_consume="2/minute", rate_limit_consume_team="1/minute") as api:
        api.app.router.add_api_route(  # type: ignore[attr-defined]
            "/test/consume", consume, methods=["POST"], response_model=ConsumeOut,
            dependencies=[rate_limit("consume", spending_caller)],
        )
        alice, bob = await make_team(db, credits="100", name="alice"), await make_team(db, credits="100", name="bob")
        one, two = [await make_app(db, name=name, operations={"deck": Decimal("1")}, teams=(alice, bob))
                    for name in ("one", "two")]

        async def charge(app: apps.RegisteredApp, team: Any) -> int:
            reply = await api.post("/test/consume", json={"teamId": str(team.team_id), "operation": "deck"},
                                   headers={"Authorization": f"Bearer {app.service_key}"})
            return reply.status_code

        assert await charge(one, alice) == 200
        assert await charge(two, alice) == 429  # alice's team limit, whichever app asks
        assert await charge(two, bob) == 200
        assert await charge(two, bob) == 429  # app two's key limit (2) is spent, and bob's
        assert await charge(one, bob) == 429  # bob's team limit

        # An app the team never granted spends none of the team's limit (the endpoint refuses it).
        carol = await make_team(db, credits="100", name="carol")
        stranger = await make_app(db, name="stranger", operations={"deck": Decimal("1")}, teams=(alice,))
        assert await charge(stranger, carol) == 403
        granted = await make_app(db, name="granted", operations={"deck": Decimal("1")}, teams=(carol,))
        assert await charge(granted, carol) == 200  # carol's one consume of the minute was still there


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json", "text/plain", None,
])
async def test_the_team_limit_of_the_credit_api_holds_whatever_the_content_type(client_with, db, content_type) -> None:
    """The team is read from the body whatever its Content-Type says (FastAPI parses JSON under
    several): after the team's one consume of the minute, a consume of another app under
    ``content_type`` is 429 too."""
    async with client_with(redis_url=None, rate_limit_consume="", rate_limit_consume_team="1/minute") as api:
        team = await make_team(db, credits="100")
        one, two = [await make_app(db, name=name, teams=(team,)) for name in ("one", "two")]
        body = json.dumps({"teamId": str(team.team_id), "operation": "deck"})
        first = await api.post("/api/v1/credits/consume", content=body, headers={
            "Authorization": f"Bearer {one.service_key}", "Content-Type": "application/json"})
        assert first.status_code == 200, first.text
        headers = {"Authorization": f"Bearer {two.service_key}"} | ({"Content-Type": content_type} if content_type else {})
        second = await api.post("/api/v1/credits/consume", content=body, headers=headers)
        assert second.status_code == 429 and "team" in second.json()["message"], second.text


async def test_limits_syntax_and_a_storage_outage_lets_requests_through() -> None:
    assert [str(i) for i in parse_limits("10/second; 500/hour")] == ["10 per 1 second", "500 per 1 hour"]
    assert parse_limits("") == () and parse_limits(None) == ()
    with pytest.raises(ValueError):
        parse_limits("lots")

    class Down(MemoryStorage):
        async def acquire_sliding_window_entry(self, *args: Any, **kwargs: Any) -> bool:
            raise ConnectionError("storage unreachable")

    limiter = RateLimiter({"generate": ScopeLimits(parse_limits("1/minute"), ())}, Down())
    for _ in range(3):
        await limiter.hit("generate", team=None, key="k")  # no exception: fail open
