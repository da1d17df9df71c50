"""Concurrency: admission under a race, and per-team limits with several workers racing."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import text

from pixelmint.jobs.queue import claim
from pixelmint.kit.db import Database
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import queue_jobs, run_workers_until_done

COST = Decimal("4.80")  # business-headshot, 512x512, standard, 1 image


async def test_fifty_concurrent_requests_with_credits_for_seven_admit_exactly_seven(api, db) -> None:
    team = await make_team(db, plan="enterprise", credits=COST * 7)
    responses = await asyncio.gather(
        *[api.post("/api/v1/generate", json=generate_body(), headers=auth(team)) for _ in range(50)]
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 7 and codes.count(402) == 43, codes
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert balance["availableCredits"] == 0.0 and balance["reservedCredits"] == float(COST * 7)
    async with db.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM jobs")) == 7
    await assert_ledger_ok(db)


# Maximum number of a team's jobs running at once, rebuilt from the recorded attempt intervals
# (the check of ../shared/reference/claim-lab/check.sql).
MAX_CONCURRENT = text("""
WITH ev AS (
    SELECT team_id, started_at AS t, 1 AS d FROM job_attempts
    UNION ALL SELECT team_id, finished_at, -1 FROM job_attempts
), run AS (
    SELECT team_id, sum(d) OVER (PARTITION BY team_id ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS concurrent FROM ev
)
SELECT team_id, max(concurrent) AS max_concurrent FROM run GROUP BY team_id
""")


async def test_racing_workers_never_exceed_a_teams_plan_limit(settings, database_url, db) -> None:
    plans = {"basic": 1, "pro": 3, "enterprise": 10}
    teams = {}
    for plan in plans:
        for n in range(2):
            teams[(await make_team(db, plan=plan, credits="10000", name=f"{plan}-{n}")).team_id] = plan
    jobs_per_team = 12
    for team_id in teams:
        await queue_jobs(db, team_id, jobs_per_team)
    settings.procedural_delay_seconds = 0.02
    await run_workers_until_done(settings, database_url, len(teams) * jobs_per_team, workers=4, concurrency=8)

    async with db.transaction() as s:
        observed = {row.team_id: row.max_concurrent for row in await s.execute(MAX_CONCURRENT)}
        states = dict((await s.execute(text("SELECT state, count(*) FROM jobs GROUP BY state"))).all())
        by_worker = dict((await s.execute(text("SELECT worker_id, count(*) FROM job_attempts GROUP BY worker_id"))).all())
    assert states == {"succeeded": len(teams) * jobs_per_team}
    for team_id, plan in teams.items():
        assert 1 <= observed[team_id] <= plans[plan], (plan, observed[team_id])
    # Concurrency really happened (the check could fail): some team ran several jobs at once.
    assert max(observed[t] for t, p in teams.items() if p != "basic") >= 2
    assert len(by_worker) >= 2  # the work really was shared between racing workers


async def test_concurrent_claims_respect_limits_without_finishing(db, database_url) -> None:
    """Many claimers at once on teams with deep queues: running counts never pass the limits."""
    limits = {"basic": 1, "pro": 3, "enterprise": 10}
    teams = {(await make_team(db, plan=p, credits="0")).team_id: p for p in limits for _ in range(3)}
    async with db.transaction() as s:
        await s.execute(
            text("""
                INSERT INTO jobs (team_id, type, params, provider, estimated_credits)
                SELECT t, 'image_generation', '{}'::jsonb, 'procedural', 0
                  FROM unnest(CAST(:teams AS uuid[])) t, generate_series(1, 20)
            """),
            {"teams": list(teams)},
        )
        await s.execute(text("UPDATE team_dispatch SET has_ready = true"))
    databases = [Database.connect(database_url, pool_size=1) for _ in range(12)]

    async def claimer(i: int, database: Database) -> int:
        got = 0
        for _ in range(10):
            async with database.transaction() as s:
                got += len(await claim(s, worker_id=f"c{i}", demand=3, lease_seconds=60))
        return got

    try:
        claimed = sum(await asyncio.gather(*[claimer(i, d) for i, d in enumerate(databases)]))
    finally:
        for d in databases:
            await d.dispose()
    async with db.transaction() as s:
        running = dict((await s.execute(text(
            "SELECT team_id, count(*) FROM jobs WHERE state = 'running' GROUP BY team_id"))).all())
    assert claimed == sum(running.values()) == sum(limits[p] for p in teams.values())
    for team_id, plan in teams.items():
        assert running.get(team_id) == limits[plan]
