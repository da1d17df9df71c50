"""The credit API for other apps (service keys, validate/consume, holds), usage, estimates,
the pricing table and fail_open enforcement, through the ASGI app and the typed client."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from pixelmint.accounts.service import CreatedTeam
from pixelmint.client import AsyncPixelmintCredits, CreditApiError, Hold, InsufficientCreditsError
from pixelmint.credits import apps
from pixelmint.kit.errors import Conflict
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import wait_for_lock_wait

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def flashcards_app(api, settings):  # type: ignore[no-untyped-def]
    """(appId, a client with its service key) of the app ``flashcards``: deck = 10, video = 50."""
    settings.admin_token = "admin-secret"
    reply = await api.post("/api/v1/admin/apps", json={"name": "flashcards", "operations": {"deck": 10, "video": 50}},
                           headers=ADMIN)
    assert reply.status_code == 201, reply.text
    client = AsyncPixelmintCredits("http://testserver", reply.json()["serviceKey"],
                                   transport=httpx.ASGITransport(app=api.app))  # type: ignore[attr-defined]
    yield reply.json()["appId"], client
    await client.aclose()


@pytest.fixture
def flashcards(flashcards_app) -> AsyncPixelmintCredits:  # type: ignore[no-untyped-def]
    return flashcards_app[1]


@pytest.fixture
def customer(flashcards_app, api, db):  # type: ignore[no-untyped-def]
    """``await customer(**make_team_args)``: a team that granted flashcards (the team's own PUT)."""

    async def make(**kwargs: Any) -> CreatedTeam:
        team = await make_team(db, **kwargs)
        granted = await api.put(f"/api/v1/credits/apps/{flashcards_app[0]}", headers=auth(team))
        assert granted.status_code == 200, granted.text
        return team

    return make


async def test_validate_then_consume(flashcards, customer, api, db) -> None:
    team = await customer(plan="basic", credits="25")
    check = await flashcards.validate_credits(team.team_id, "deck")
    assert (check.has_credits, check.available_credits, check.required_credits) == (True, Decimal("25"), Decimal("10"))
    charged = await flashcards.consume_credits(team.team_id, "deck", description="deck: verbs", metadata={"cards": 20})
    assert charged.consumed_credits == Decimal("10") and charged.available_credits == Decimal("15")
    await flashcards.consume_credits(team.team_id, "custom", amount=Decimal("4.50"))
    balance = await flashcards.get_balance(team.team_id)
    assert balance.available_credits == Decimal("10.5")
    assert not (await flashcards.validate_credits(team.team_id, "video")).has_credits
    with pytest.raises(InsufficientCreditsError) as err:
        await flashcards.consume_credits(team.team_id, "video")
    assert (err.value.required_credits, err.value.available_credits) == (Decimal("50"), Decimal("10.5"))
    with pytest.raises(CreditApiError) as unknown:
        await flashcards.consume_credits(team.team_id, "nope")
    assert unknown.value.status == 404 and unknown.value.code == "unknown_operation"
    history = (await api.get("/api/v1/credits/history", headers=auth(team))).json()["items"]
    assert [(t["type"], t["amount"], t["operation"]) for t in history[:2]] == [("consume", 4.5, "custom"), ("consume", 10.0, "deck")]
    await assert_ledger_ok(db)


async def test_holds_capture_release_and_expiry(flashcards, customer, db) -> None:
    team = await customer(plan="basic", credits="100")
    hold = await flashcards.reserve(team.team_id, "video", ttl_seconds=600)
    assert hold.status == "held" and hold.amount == Decimal("50")
    assert (await flashcards.get_balance(team.team_id)).reserved_credits == Decimal("50")
    captured = await flashcards.capture(hold.hold_id, Decimal("30"))
    assert captured.status == "captured" and captured.captured_amount == Decimal("30")
    assert (await flashcards.get_balance(team.team_id)).available_credits == Decimal("70")
    for again in (flashcards.capture(hold.hold_id), flashcards.release(hold.hold_id)):
        with pytest.raises(CreditApiError) as err:
            await again
        assert err.value.status == 409 and err.value.code == "hold_already_settled"

    second = await flashcards.reserve(team.team_id, "deck")
    assert (await flashcards.release(second.hold_id)).status == "released"
    assert (await flashcards.release(second.hold_id)).status == "released"  # idempotent
    assert (await flashcards.get_balance(team.team_id)).available_credits == Decimal("70")

    expiring = await flashcards.reserve(team.team_id, "deck", ttl_seconds=60)
    async with db.transaction() as s:  # let its time-to-live pass
        await s.execute(text("UPDATE credit_reservations SET expires_at = now() - interval '1 second' WHERE id = :id"),
                        {"id": expiring.hold_id})
    with pytest.raises(CreditApiError) as err:
        await flashcards.capture(expiring.hold_id)
    assert err.value.code == "hold_expired"
    async with db.transaction() as s:
        assert await apps.release_expired_holds(s) == 1
    assert (await flashcards.get_balance(team.team_id)).available_credits == Decimal("70")
    with pytest.raises(CreditApiError) as bad_ttl:
        await flashcards.reserve(team.team_id, "deck", ttl_seconds=10**9)
    assert bad_ttl.value.code == "invalid_ttl"
    await assert_ledger_ok(db)


async def test_keys_are_not_interchangeable_and_usage_is_per_app(flashcards, customer, api, db) -> None:
    team = await customer(plan="pro", credits="100")
    response = await api.post("/api/v1/credits/consume", json={"teamId": str(team.team_id), "operation": "deck"},
                              headers=auth(team))
    assert response.status_code == 401 and response.json()["error"] == "invalid_service_key"
    await flashcards.consume_credits(team.team_id, "deck")
    await flashcards.consume_credits(team.team_id, "deck")
    await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
    app_usage = (await flashcards._http.get("/api/v1/credits/usage")).json()["items"]
    assert app_usage == [{"app": "flashcards", "operation": "deck", "count": 2, "credits": 20.0}]
    team_usage = (await api.get("/api/v1/credits/usage", headers=auth(team))).json()["items"]
    assert team_usage == [{"app": "flashcards", "operation": "deck", "count": 2, "credits": 20.0}]


async def test_fail_open_runs_and_records_the_shortfall(api, db, settings) -> None:
    settings.credit_enforcement = "fail_open"
    team = await make_team(db, plan="basic", credits="1")
    reply = await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
    assert reply.status_code == 202 and reply.json()["job"]["estimatedCredits"] == 4.8
    history = (await api.get("/api/v1/credits/history", headers=auth(team))).json()["items"]
    adjust = next(t for t in history if t["type"] == "adjust")
    assert adjust["amount"] == 3.8 and adjust["metadata"]["failOpen"] is True
    await assert_ledger_ok(db)


async def test_pricing_table_changes_new_jobs_only_and_estimate_matches(api, db, settings) -> None:
    settings.admin_token = "admin-secret"
    team = await make_team(db, plan="pro", credits="500")
    estimate = await api.post("/api/v1/credits/estimate", headers=auth(team), json={
        "operation": "image_generation", "referenceModelId": "business-headshot", "resolution": "512x512"})
    assert estimate.json()["estimatedCredits"] == 4.8
    queued = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]

    changed = await api.put("/api/v1/admin/pricing/image_generation", json={"base": 10}, headers=ADMIN)
    assert changed.status_code == 200 and changed.json()["image_generation"]["base"] == 10
    bad = await api.put("/api/v1/admin/pricing/image_generation", json={"bogus": 1}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_pricing"

    again = await api.post("/api/v1/credits/estimate", headers=auth(team), json={
        "operation": "image_generation", "referenceModelId": "business-headshot", "resolution": "512x512"})
    assert again.json()["estimatedCredits"] == 9.6
    new_job = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]
    assert new_job["estimatedCredits"] == 9.6
    old = (await api.get(f"/api/v1/jobs/{queued['id']}", headers=auth(team))).json()["job"]
    assert old["estimatedCredits"] == 4.8  # a job keeps the price it was reserved at
    creation = await api.post("/api/v1/credits/estimate", headers=auth(team), json={
        "operation": "model_creation", "referenceModelId": "fashion-editorial", "trainingImages": 12})
    assert creation.json()["estimatedCredits"] == 93.5


async def test_consume_with_an_idempotency_key_charges_once(flashcards, customer, db) -> None:
    team = await customer(plan="basic", credits="100")
    first = await flashcards.consume_credits(team.team_id, "deck", idempotency_key="deck-42")
    again = await flashcards.consume_credits(team.team_id, "deck", idempotency_key="deck-42")
    assert first == again
    assert (await flashcards.get_balance(team.team_id)).available_credits == Decimal("90")
    with pytest.raises(CreditApiError) as err:
        await flashcards.consume_credits(team.team_id, "video", idempotency_key="deck-42")
    assert err.value.status == 409 and err.value.code == "idempotency_key_reused"
    await assert_ledger_ok(db)


async def test_a_resolution_the_pricing_table_does_not_price_is_422(api, db, settings) -> None:
    settings.admin_token = "admin-secret"
    team = await make_team(db, plan="pro", credits="500")
    tiers = {"resolutionTiers": [[512 * 512, 1.0]]}
    assert (await api.put("/api/v1/admin/pricing/image_generation", json=tiers, headers=ADMIN)).status_code == 200
    reply = await api.post("/api/v1/generate", json=generate_body(resolution="1024x1024"), headers=auth(team))
    assert reply.status_code == 422 and reply.json()["error"] == "resolution_not_priced"
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).json()["reservedCredits"] == 0.0


async def test_a_capture_racing_a_release_settles_once_and_the_loser_is_409(flashcards, customer, db) -> None:
    """Capture ‖ release of one hold, 100 rounds over the HTTP API (each request on its own
    database connection): exactly one answers 200, the other 409 ``hold_already_settled`` naming
    what the hold became, and the books add up."""
    team = await customer(plan="pro", credits="1000")
    captured = 0
    for _ in range(100):
        hold = await flashcards.reserve(team.team_id, "deck")
        capture, release = await asyncio.gather(flashcards.capture(hold.hold_id), flashcards.release(hold.hold_id),
                                                return_exceptions=True)
        winners = [r for r in (capture, release) if isinstance(r, Hold)]
        losers = [r for r in (capture, release) if isinstance(r, CreditApiError)]
        assert len(winners) == len(losers) == 1, (capture, release)
        won, lost = winners[0], losers[0]
        assert won.status == ("captured" if won is capture else "released")
        assert (lost.status, lost.code, lost.body["status"]) == (409, "hold_already_settled", won.status)
        captured += won is capture
    assert 0 < captured < 100  # both sides won some rounds: the race was run, not serialised
    assert (await flashcards.get_balance(team.team_id)).available_credits == Decimal("1000") - 10 * captured
    await assert_ledger_ok(db)


async def test_a_release_queued_behind_a_capture_is_409(flashcards_app, customer, db) -> None:
    """Deterministically, with the service on two connections: the release reads the hold as held,
    then waits for the capture's row lock; once the capture commits, the release must refuse."""
    app_id, flashcards = flashcards_app
    team = await customer(credits="100")
    hold = await flashcards.reserve(team.team_id, "deck")
    app = apps.AppPrincipal(uuid.UUID(app_id), "flashcards")

    async def release() -> None:
        async with db.transaction() as s:
            await apps.release(s, app, hold.hold_id)

    async with db.transaction() as s:
        assert (await apps.capture(s, app, hold.hold_id, amount=None)).status == "captured"
        releasing = asyncio.create_task(release())
        await wait_for_lock_wait(db)
    with pytest.raises(Conflict) as err:
        await releasing
    assert err.value.code == "hold_already_settled" and err.value.extra["status"] == "captured"
    assert (await flashcards.get_balance(team.team_id)).available_credits == Decimal("90")
    await assert_ledger_ok(db)


async def test_captures_are_the_apps_usage(flashcards_app, customer, api, db) -> None:
    """Capture and release rows carry the hold's app: usage counts the capture for the app (not
    for ``pixelmint``), and the history's ``appId`` filter finds the settlement rows."""
    app_id, flashcards = flashcards_app
    team = await customer(plan="pro", credits="100")
    video = await flashcards.reserve(team.team_id, "video")
    await flashcards.capture(video.hold_id, Decimal("30"))
    deck = await flashcards.reserve(team.team_id, "deck")
    await flashcards.release(deck.hold_id)
    await flashcards.consume_credits(team.team_id, "deck")

    expected = [{"app": "flashcards", "operation": "deck", "count": 1, "credits": 10.0},
                {"app": "flashcards", "operation": "video", "count": 1, "credits": 30.0}]
    assert (await flashcards._http.get("/api/v1/credits/usage")).json()["items"] == expected
    assert (await api.get("/api/v1/credits/usage", headers=auth(team))).json()["items"] == expected
    history = (await api.get("/api/v1/credits/history", params={"appId": app_id}, headers=auth(team))).json()["items"]
    assert [t["type"] for t in history] == ["consume", "release", "reserve", "capture", "reserve"]
    await assert_ledger_ok(db)
