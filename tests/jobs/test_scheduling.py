"""Scheduling: round-robin fairness, plan priority, retries with backoff, failures, timeouts, caps."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from pixelmint.flows.generation import image_generation
from pixelmint.jobs.tasks import TaskOutcome
from pixelmint.providers.base import ProviderError
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import job_handlers, queue_jobs, run_workers_until_done

# The order in which the scheduler handed jobs out (claims), which timing on a loaded machine
# cannot reorder, unlike completion times.
CLAIM_ORDER = text("""
SELECT a.team_id FROM job_attempts a WHERE a.outcome = 'succeeded' ORDER BY a.started_at, a.id
""")


async def test_a_noisy_team_does_not_starve_quiet_ones(settings, database_url, db) -> None:
    noisy = (await make_team(db, plan="pro", name="noisy")).team_id
    quiet = [(await make_team(db, plan="pro", name=f"quiet{i}")).team_id for i in range(8)]
    await queue_jobs(db, noisy, 60)  # queued first: a FIFO queue would run all of these first
    for team_id in quiet:
        await queue_jobs(db, team_id, 2)
    settings.procedural_delay_seconds = 0.005
    await run_workers_until_done(settings, database_url, 60 + 16, concurrency=3)
    async with db.transaction() as s:
        order = [row.team_id for row in await s.execute(CLAIM_ORDER)]
    last_quiet = max(i for i, team in enumerate(order) if team != noisy)
    noisy_before = sum(1 for team in order[:last_quiet] if team == noisy)
    # Round robin over 9 teams: the quiet teams' 16 jobs finish within about two rounds, while the
    # noisy team gets about one job per round (FIFO would have run all 60 first).
    assert noisy_before <= 12, (noisy_before, last_quiet)
    assert order.count(noisy) == 60


async def test_higher_plan_priority_is_claimed_first(settings, database_url, db) -> None:
    basic = (await make_team(db, plan="basic")).team_id
    enterprise = (await make_team(db, plan="enterprise")).team_id
    await queue_jobs(db, basic, 3)
    await queue_jobs(db, enterprise, 3)
    await run_workers_until_done(settings, database_url, 6, concurrency=1)
    async with db.transaction() as s:
        order = [row.team_id for row in await s.execute(CLAIM_ORDER)]
    assert order[:3] == [enterprise] * 3


async def test_transient_provider_error_is_retried_with_backoff(api, settings, database_url, db) -> None:
    team = await make_team(db, plan="basic", credits="10")
    job_id = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]["id"]
    calls = []

    async def flaky(ctx, job) -> TaskOutcome:  # type: ignore[no-untyped-def]
        calls.append(job.attempt)
        if job.attempt == 1:
            raise ProviderError("upstream 503: try again", code="provider_unavailable", retryable=True)
        return await image_generation(ctx, job)

    await run_workers_until_done(settings, database_url, 1, handlers=job_handlers(image_generation=flaky))
    async with db.transaction() as s:
        attempts = (await s.execute(text(
            "SELECT attempt, outcome, error_message FROM job_attempts WHERE job_id = :id ORDER BY attempt"),
            {"id": uuid.UUID(job_id)})).all()
    assert calls == [1, 2]
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "retry"), (2, "succeeded")]
    job = (await api.get(f"/api/v1/jobs/{job_id}", headers=auth(team))).json()
    assert job["job"]["status"] == "succeeded" and job["job"]["chargedCredits"] == 4.8
    assert [t["type"] for t in job["creditTransactions"]] == ["reserve", "capture"]
    await assert_ledger_ok(db)


async def test_permanent_failure_says_why_and_releases(api, settings, database_url, db) -> None:
    team = await make_team(db, plan="basic", credits="10")
    job_id = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]["id"]

    async def broken(ctx, job) -> TaskOutcome:  # type: ignore[no-untyped-def]
        raise ProviderError("model 'x' not found at the provider: check the reference model's providerModels",
                            code="provider_model_not_found", retryable=False)

    await run_workers_until_done(settings, database_url, 1, handlers=job_handlers(image_generation=broken))
    detail = (await api.get(f"/api/v1/jobs/{job_id}", headers=auth(team))).json()
    assert detail["job"]["status"] == "failed" and detail["job"]["attempt"] == 1
    assert detail["job"]["error"]["code"] == "provider_model_not_found"
    assert "providerModels" in detail["job"]["error"]["message"]
    assert [t["type"] for t in detail["creditTransactions"]] == ["reserve", "release"]
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert balance["availableCredits"] == 10.0 and balance["reservedCredits"] == 0.0
    await assert_ledger_ok(db)


async def test_per_type_timeout_fails_the_attempt(api, settings, database_url, db) -> None:
    settings.max_attempts = 1
    settings.job_timeouts = {"image_generation": 0.2}
    settings.procedural_delay_seconds = 30
    team = await make_team(db, plan="basic", credits="10")
    job_id = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]["id"]
    await run_workers_until_done(settings, database_url, 1)
    job = (await api.get(f"/api/v1/jobs/{job_id}", headers=auth(team))).json()["job"]
    assert job["status"] == "failed" and job["error"]["code"] == "timeout"
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).json()["reservedCredits"] == 0.0
    await assert_ledger_ok(db)


async def test_queued_jobs_cap_is_429(api, settings, db) -> None:
    settings.max_queued_jobs_per_team = 2
    team = await make_team(db, plan="basic", credits="100")
    codes = [(await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    reply = await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
    assert reply.json()["error"] == "queue_full" and reply.json()["limit"] == 2
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).json()["reservedCredits"] == 9.6
    settings.max_queued_jobs_per_team = 0  # no cap
    assert (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).status_code == 202
