"""``/api/v1/admin/teams/{teamId}/credits/{grant|adjust|void}`` and ``…/plan`` through the ASGI app."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from pixelmint.credits import service as credits
from tests.billing.builders import balance_row, ledger_rows, set_due, team_row
from tests.builders import assert_ledger_ok, make_team

D = Decimal
ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def admin_api(api, settings):  # type: ignore[no-untyped-def]
    settings.admin_token = "admin-secret"
    return api


def url(team, action: str) -> str:  # type: ignore[no-untyped-def]
    return f"/api/v1/admin/teams/{team.team_id}/{action}"


async def test_grant_adjust_void_with_reasons(admin_api, db) -> None:
    team = await make_team(db, credits="100")
    r = await admin_api.post(url(team, "credits/grant"), headers=ADMIN,
                             json={"amount": 25.5, "bucket": "bonus", "reason": "support ticket 42"})
    assert r.status_code == 200, r.text
    body = r.json()
    grant_id = body["transaction"]["id"]
    assert body["transaction"]["type"] == "grant" and body["transaction"]["description"] == "support ticket 42"
    assert body["transaction"]["bonusDelta"] == 25.5 and body["transaction"]["metadata"] == {"source": "admin"}
    assert (body["balance"]["bonusCredits"], body["balance"]["allocationCredits"]) == (25.5, 100.0)

    r = await admin_api.post(url(team, "credits/grant"), headers=ADMIN,
                             json={"amount": 10, "bucket": "allocation", "reason": "launch week"})
    assert r.json()["balance"]["allocationCredits"] == 110.0 and r.json()["balance"]["totalAllocated"] == 110.0

    r = await admin_api.post(url(team, "credits/adjust"), headers=ADMIN,
                             json={"amount": -30, "bucket": "allocation", "reason": "double grant"})
    assert r.status_code == 200, r.text
    assert r.json()["transaction"]["allocationDelta"] == -30.0 and r.json()["balance"]["allocationCredits"] == 80.0

    r = await admin_api.post(url(team, "credits/adjust"), headers=ADMIN,
                             json={"amount": -25.51, "bucket": "bonus", "reason": "too much"})
    assert r.status_code == 409 and r.json()["error"] == "bucket_would_go_negative"
    assert r.json()["bucketCredits"] == 25.5

    r = await admin_api.post(url(team, "credits/void"), headers=ADMIN, json={"transactionId": grant_id, "reason": "refund"})
    assert r.status_code == 200, r.text
    assert r.json()["transaction"]["type"] == "void" and r.json()["transaction"]["metadata"]["voids"] == grant_id
    assert r.json()["balance"]["bonusCredits"] == 0.0
    r = await admin_api.post(url(team, "credits/void"), headers=ADMIN, json={"transactionId": grant_id, "reason": "again"})
    assert r.status_code == 409 and r.json()["error"] == "already_voided"

    assert [row.type for row in await ledger_rows(db, team.team_id)] == ["grant", "grant", "grant", "adjust", "void"]
    b = await balance_row(db, team.team_id)
    assert (b.allocation_credits, b.bonus_credits) == (D("80.00"), D("0.00"))
    await assert_ledger_ok(db)


async def test_admin_credit_requests_are_validated(admin_api, db) -> None:
    team = await make_team(db, credits="10")
    bad = [
        ("credits/grant", {"amount": 5, "bucket": "bonus"}),  # no reason
        ("credits/grant", {"amount": 5, "bucket": "bonus", "reason": ""}),
        ("credits/grant", {"amount": 0, "bucket": "bonus", "reason": "r"}),
        ("credits/grant", {"amount": 1.234, "bucket": "bonus", "reason": "r"}),
        ("credits/grant", {"amount": 5, "bucket": "gold", "reason": "r"}),
        ("credits/adjust", {"amount": 0, "bucket": "bonus", "reason": "r"}),
        ("credits/grant", {"amount": 5, "bucket": "bonus", "reason": "   "}),
    ]
    for action, body in bad:
        r = await admin_api.post(url(team, action), headers=ADMIN, json=body)
        assert r.status_code == 422, (body, r.text)
    r = await admin_api.post("/api/v1/admin/teams/00000000-0000-4000-8000-000000000000/credits/grant", headers=ADMIN,
                             json={"amount": 5, "reason": "r"})
    assert r.status_code == 404 and r.json()["error"] == "team_not_found"
    r = await admin_api.post(url(team, "credits/void"), headers=ADMIN, json={"transactionId": 999999, "reason": "r"})
    assert r.status_code == 404 and r.json()["error"] == "transaction_not_found"
    r = await admin_api.post(url(team, "credits/grant"), json={"amount": 5, "reason": "r"})
    assert r.status_code == 401
    r = await admin_api.post(url(team, "credits/grant"), headers={"Authorization": f"Bearer {team.api_key}"},
                             json={"amount": 5, "reason": "r"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_admin_token"
    assert [row.type for row in await ledger_rows(db, team.team_id)] == ["grant"]
    await assert_ledger_ok(db)


async def test_admin_api_is_disabled_without_a_token(api, db) -> None:
    team = await make_team(db)
    r = await api.post(url(team, "credits/grant"), headers=ADMIN, json={"amount": 5, "reason": "r"})
    assert r.status_code == 403 and r.json()["error"] == "admin_disabled"


async def test_change_plan_updates_dispatch_limits(admin_api, db) -> None:
    team = await make_team(db, plan="basic", credits="40")
    r = await admin_api.post(url(team, "plan"), headers=ADMIN, json={"plan": "pro", "reason": "upgrade"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["plan"], body["previousPlan"], body["maxConcurrentJobs"], body["replenished"]) == ("pro", "basic", 3, False)
    assert body["balance"]["allocationCredits"] == 40.0  # the new amount comes with the next replenishment
    row = await team_row(db, team.team_id)
    assert (row.plan_code, row.priority, row.max_running) == ("pro", 20, 3)

    r = await admin_api.post(url(team, "plan"), headers=ADMIN, json={"plan": "enterprise", "replenishNow": True})
    assert r.status_code == 200 and r.json()["replenished"] is True
    assert r.json()["balance"]["allocationCredits"] == 10000.0 and r.json()["balance"]["allocationPeriod"] == 1
    next_at = dt.datetime.fromisoformat(r.json()["balance"]["nextReplenishmentAt"])
    assert next_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    *_, expire, renew = await ledger_rows(db, team.team_id)
    assert (expire.type, renew.type, renew.description) == ("expire", "replenish", "plan changed to enterprise")

    r = await admin_api.post(url(team, "plan"), headers=ADMIN, json={"plan": "free"})
    assert (await team_row(db, team.team_id))[3:] == (0, 1)  # free: one (free) job at a time
    r = await admin_api.post(url(team, "plan"), headers=ADMIN, json={"plan": "platinum"})
    assert r.status_code == 422 and r.json()["error"] == "unknown_plan"
    await assert_ledger_ok(db)


async def test_upgrading_a_free_team_schedules_its_first_replenishment(admin_api, db) -> None:
    team = await make_team(db, plan="free")
    await set_due(db, team.team_id, None)
    r = await admin_api.post(url(team, "plan"), headers=ADMIN, json={"plan": "basic"})
    due = dt.datetime.fromisoformat(r.json()["balance"]["nextReplenishmentAt"])
    assert due <= dt.datetime.now(dt.UTC)  # due now: the replenishment task grants 500 on its next run


async def test_new_jobs_see_the_new_concurrency(admin_api, db) -> None:
    """The claim reads team_dispatch: after a downgrade to basic a second job is not claimed."""
    from pixelmint.jobs import queue

    team = await make_team(db, plan="pro", credits="1000")
    await admin_api.post(url(team, "plan"), headers=ADMIN, json={"plan": "basic"})
    async with db.transaction() as s:
        for _ in range(2):
            hold = await credits.reserve(s, team_id=team.team_id, amount=D("5"), operation="image_generation")
            await queue.enqueue(
                s, id=uuid.uuid4(), team_id=team.team_id, user_id=team.user_id, type="image_generation",
                priority=0, params="{}", reference_model_id=None, custom_model_id=None, custom_model_version=None,
                provider="procedural", estimated_credits=D("5"), reservation_id=hold.id, is_free=False, max_attempts=1,
            )
    async with db.transaction() as s:
        claimed = await queue.claim(s, worker_id="w", demand=5, lease_seconds=30)
    assert len(claimed) == 1
