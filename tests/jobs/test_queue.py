"""The queue's SQL under contention (jobs/queue.py, ``pixelmint_claim_jobs``): claims skip teams
whose jobs wait out a backoff."""

from __future__ import annotations

from sqlalchemy import text

from pixelmint.jobs import queue
from tests.builders import make_team
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
