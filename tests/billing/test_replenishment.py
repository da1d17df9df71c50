"""The self-hosted replenishment task: due teams get their plan's monthly credits, once."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

from sqlalchemy import text

from pixelmint.accounts.service import REPLENISHMENT_PERIOD
from pixelmint.billing.replenishment import ReplenishTask, next_after, replenish_due
from pixelmint.credits import service as credits
from tests.billing.builders import balance_row, ledger_rows, set_due
from tests.builders import assert_ledger_ok, make_team

D = Decimal
NOW = dt.datetime(2031, 3, 1, 12, tzinfo=dt.UTC)


def test_next_after_keeps_the_schedule() -> None:
    due = NOW - dt.timedelta(hours=1)
    assert next_after(due, NOW) == due + REPLENISHMENT_PERIOD
    assert next_after(NOW, NOW) == NOW + REPLENISHMENT_PERIOD
    late = NOW - dt.timedelta(days=65)  # two periods missed: the next date is still in step
    assert next_after(late, NOW) == late + 3 * REPLENISHMENT_PERIOD > NOW


async def test_run_once_replenishes_due_teams_with_their_plans_credits(db) -> None:
    basic = await make_team(db, plan="basic", credits="120")
    pro = await make_team(db, plan="pro")
    later = await make_team(db, plan="basic")
    async with db.transaction() as s:
        await credits.grant(s, team_id=basic.team_id, amount=D("9"), bucket="bonus")
    due = NOW - dt.timedelta(minutes=5)
    await set_due(db, basic.team_id, due)
    await set_due(db, pro.team_id, due - dt.timedelta(days=65))  # the service was down for two months
    await set_due(db, later.team_id, NOW + dt.timedelta(minutes=1))
    task = ReplenishTask(db, interval_seconds=300, batch_size=1)  # one team per transaction

    report = await task.run_once(now=NOW)
    assert (report.teams, report.batches, report.missed_periods) == (2, 2, 2)
    assert report.credits_granted == D("2500") and report.credits_expired == D("2120.00")
    b = await balance_row(db, basic.team_id)
    assert (b.allocation_credits, b.bonus_credits, b.next_replenishment_at, b.allocation_period) == (
        D("500.00"), D("9.00"), due + REPLENISHMENT_PERIOD, 1)
    p = await balance_row(db, pro.team_id)
    assert p.allocation_credits == D("2000.00") and p.total_allocated == D("4000.00")  # granted once, not 3 times
    assert p.next_replenishment_at == due - dt.timedelta(days=65) + 3 * REPLENISHMENT_PERIOD
    assert (await balance_row(db, later.team_id)).allocation_period == 0
    *_, expire, renew = await ledger_rows(db, basic.team_id)
    assert (expire.type, expire.amount, renew.type, renew.amount) == ("expire", D("120.00"), "replenish", D("500.00"))
    assert renew.description == "monthly replenishment (basic plan)" and renew.metadata["source"] == "schedule"

    again = await task.run_once(now=NOW)  # nothing is due any more
    assert again.teams == 0 and task.last_report is again
    await assert_ledger_ok(db)


async def test_free_plan_allocation_expires_and_nothing_is_scheduled(db) -> None:
    team = await make_team(db, plan="free", credits="30")
    await set_due(db, team.team_id, NOW - dt.timedelta(days=1))
    report = await replenish_due(db, now=NOW)
    assert (report.teams, report.credits_expired) == (1, D("30.00"))
    b = await balance_row(db, team.team_id)
    assert (b.allocation_credits, b.next_replenishment_at) == (D("0.00"), None)
    await assert_ledger_ok(db)


async def test_stripe_subscribed_teams_are_left_to_stripe(db) -> None:
    team = await make_team(db, plan="pro")
    await set_due(db, team.team_id, NOW - dt.timedelta(days=1))
    async with db.transaction() as s:
        await s.execute(text("UPDATE teams SET stripe_subscription_id = 'sub_1' WHERE id = :t"), {"t": team.team_id})
    assert (await replenish_due(db, now=NOW)).teams == 0
    assert (await balance_row(db, team.team_id)).allocation_period == 0


async def test_concurrent_runs_replenish_each_team_once(db) -> None:
    teams = [await make_team(db, plan="basic", name=f"t{i}") for i in range(6)]
    for team in teams:
        await set_due(db, team.team_id, NOW - dt.timedelta(hours=1))
    reports = await asyncio.gather(*(replenish_due(db, now=NOW, batch_size=2) for _ in range(3)))
    assert sum(r.teams for r in reports) == 6
    for team in teams:
        assert (await balance_row(db, team.team_id)).allocation_period == 1
    await assert_ledger_ok(db)


async def test_runtime_starts_the_task_with_a_worker(api_with_worker) -> None:
    runtime = api_with_worker.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.replenisher is not None and runtime.replenisher.interval_seconds == 300
