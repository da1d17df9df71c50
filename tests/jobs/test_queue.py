"""The queue's SQL (jobs/queue.py, ``migrations/pixelmint_claim_jobs.sql``): claims skip teams
whose jobs wait out a backoff; the rescue pass and enqueue take their locks in the same order."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from pixelmint.accounts.service import Principal
from pixelmint.jobs import queue
from pixelmint.jobs import service as jobs_service
from pixelmint.jobs.queue import JOBS_CHANNEL
from pixelmint.kit.db import Database, alembic_config, asyncpg_connect_kwargs
from tests.builders import assert_ledger_ok, make_team
from tests.helpers import queue_jobs


async def test_teams_waiting_out_a_backoff_do_not_starve_the_claim(db) -> None:
    """As many teams as the worker has free slots, ranked first (least recently served), whose only
    queued jobs wait out a retry backoff: the claim must pass them and take a ready team's job."""
    slots = 3
    backed_off = [(await make_team(db, name=f"backed-off{i}")).team_id for i in range(slots)]
    ready = (await make_team(db, name="ready")).team_id
    for team_id in backed_off:
        await queue_jobs(db, team_id, 1)
    async with db.transaction() as session:
        failing = await queue.claim(session, worker_id="w", demand=slots, lease_seconds=30)
    assert {job.team_id for job in failing} == set(backed_off)
    async with db.transaction() as session:
        for job in failing:
            fence = queue.Fence(job.id, "w", job.attempt)
            await queue.mark_failed(session, fence, code="provider_unavailable", message="503", retry_in=3600)
    await queue_jobs(db, ready, 1)
    async with db.transaction() as session:  # the ready team was served last: it ranks after them
        await session.execute(text("UPDATE team_dispatch SET last_dispatched_at = now() WHERE team_id = :t"),
                              {"t": ready})

    async with db.transaction() as session:
        claimed = await queue.claim(session, worker_id="w", demand=slots, lease_seconds=30)
    assert [job.team_id for job in claimed] == [ready]
    async with db.transaction() as session:
        waiting = await session.scalar(text(
            "SELECT count(*) FROM jobs WHERE team_id = ANY(:teams) AND state = 'queued' AND run_at > now()"),
            {"teams": backed_off})
    assert waiting == slots


async def test_a_large_claim_serves_higher_plans_first_then_round_robin(db) -> None:
    """A claim of many slots hands them out as claims of one would: the enterprise team's jobs up
    to its limit (10) first, then the pro teams' first jobs, then their second ones (round robin
    within a priority); the basic teams get what is left."""
    enterprise = (await make_team(db, plan="enterprise", name="e")).team_id
    pros = [(await make_team(db, plan="pro", name=f"p{i}")).team_id for i in range(2)]
    basics = [(await make_team(db, plan="basic", name=f"b{i}")).team_id for i in range(3)]
    await queue_jobs(db, enterprise, 12)
    for team_id in pros:
        await queue_jobs(db, team_id, 3)
    for team_id in basics:
        await queue_jobs(db, team_id, 2)

    async def claim(demand: int) -> dict[uuid.UUID, int]:
        async with db.transaction() as session:
            claimed = await queue.claim(session, worker_id="w", demand=demand, lease_seconds=30)
        return {team: sum(1 for job in claimed if job.team_id == team) for team in {job.team_id for job in claimed}}

    wakeups: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(**asyncpg_connect_kwargs(db.url))
    try:
        await listener.add_listener(JOBS_CHANNEL, lambda *args: wakeups.put_nowait(args[3]))
        assert await claim(12) == {enterprise: 10, pros[0]: 1, pros[1]: 1}
        # The basic teams were locked by that full claim and got nothing: the other workers are woken.
        await asyncio.wait_for(wakeups.get(), 30)
    finally:
        await listener.close()
    assert await claim(2) == {pros[0]: 1, pros[1]: 1}
    assert await claim(10) == {pros[0]: 1, pros[1]: 1, basics[0]: 1, basics[1]: 1, basics[2]: 1}
    assert await claim(10) == {}  # every team at its limit


async def test_the_claim_function_is_its_sql_file_and_migrates_both_ways(database_url, db) -> None:
    """The database's claim function is ``migrations/pixelmint_claim_jobs.sql`` (with the ready-now
    probe of step 1); the downgrade removes it, the upgrade puts the same one back."""
    config = alembic_config(database_url)
    claim_sql = (Path(ScriptDirectory.from_config(config).dir) / "pixelmint_claim_jobs.sql").read_text()

    async def claim_source() -> str | None:
        async with db.transaction() as session:
            return await session.scalar(text("SELECT prosrc FROM pg_proc WHERE proname = 'pixelmint_claim_jobs'"))

    at_head = await claim_source()
    assert at_head is not None and at_head == claim_sql.split("$$")[1]
    assert "run_at <= now()\n                   OFFSET 0" in at_head
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await claim_source() is None
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await claim_source() == at_head


async def _wait_until_blocked_by(db: Database, pid: int, other: asyncio.Task) -> None:
    """Until some backend waits for a lock that backend ``pid`` holds. PostgreSQL announces no lock
    wait, so this polls ``pg_blocking_pids``, bounded, failing if ``other`` ended without waiting."""
    deadline = time.monotonic() + 30
    while True:
        async with db.transaction() as session:
            if await session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                                    {"pid": pid}):
                return
        assert not other.done(), "it never waited for the enqueue's lock"
        assert time.monotonic() < deadline, "no lock wait within 30 s"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("paid", [True, False], ids=["reserved-credits", "free-generation"])
async def test_the_rescue_pass_and_an_enqueue_do_not_deadlock(db, settings, paid) -> None:
    """Two jobs of a team lost their worker: one retries (raises the team's has_ready), one has no
    attempt left (gives its credits or free generation back). Meanwhile an enqueue of the team holds
    its balance (or its user's free generation) and goes on to raise has_ready. Forced interleaving:
    the rescue pass starts once the enqueue holds its first lock, and the enqueue goes on once the
    rescue pass waits for it. Opposite lock orders deadlock here and PostgreSQL aborts one of them."""
    team = await make_team(db, plan="pro", credits="100", free_generations=3)
    principal = Principal(team.team_id, team.user_id, uuid.uuid4(), "pro", 3)
    cost = Decimal("4.80") if paid else None

    async def enqueue(session) -> uuid.UUID:  # type: ignore[no-untyped-def]
        job = await jobs_service.queue_job(
            session, principal, job_type="image_generation", cost=cost, params={},
            reference_model_id="business-headshot", custom_model_id=None, custom_model_version=None,
            provider="procedural", settings=settings,
        )
        return job.id

    lost = []
    for _ in range(2):
        async with db.transaction() as session:
            await enqueue(session)
        async with db.transaction() as session:
            lost += await queue.claim(session, worker_id="lost", demand=1, lease_seconds=30)
    retried, failed = (job.id for job in lost)
    async with db.transaction() as session:  # both leases ran out, the retried one first
        await session.execute(text("""
            UPDATE jobs SET lease_expires_at = now() - interval '1 minute' * (CASE WHEN id = :r THEN 2 ELSE 1 END),
                            max_attempts = CASE WHEN id = :f THEN attempt ELSE max_attempts END
             WHERE id IN (:r, :f)"""), {"r": retried, "f": failed})

    async def rescue_pass() -> list[queue.Job]:
        async with db.transaction() as session:
            return await queue.rescue_expired(session, retry_base=60, retry_cap=60)

    async with db.transaction() as enqueuer:
        pid = await enqueuer.scalar(text("SELECT pg_backend_pid()"))
        first_lock = (
            "SELECT 1 FROM credit_balances WHERE team_id = :t FOR UPDATE" if paid else
            "UPDATE users SET free_generations_remaining = free_generations_remaining - 1 WHERE team_id = :t"
        )
        await enqueuer.execute(text(first_lock), {"t": team.team_id})
        rescue = asyncio.create_task(rescue_pass())
        await _wait_until_blocked_by(db, pid, rescue)
        queued = await enqueue(enqueuer)
    rescued = await rescue

    assert {job.id: job.state for job in rescued} == {retried: "queued", failed: "failed"}
    async with db.transaction() as session:
        assert await session.scalar(text("SELECT state FROM jobs WHERE id = :id"), {"id": queued}) == "queued"
        assert await session.scalar(text("SELECT has_ready FROM team_dispatch WHERE team_id = :t"),
                                    {"t": team.team_id})
        free_left = await session.scalar(text("SELECT free_generations_remaining FROM users WHERE team_id = :t"),
                                         {"t": team.team_id})
    assert free_left == 3  # free generation: the enqueue took one, the failed job gave its own back
    await assert_ledger_ok(db)
