"""A provider callback that arrives before the worker has handed the job over to it."""

from __future__ import annotations

from sqlalchemy import text

from pixelmint.jobs import queue
from pixelmint.jobs.queue import Fence
from tests.builders import make_team
from tests.helpers import queue_jobs


async def test_an_early_callback_sends_the_job_back_to_be_resumed(db) -> None:
    team = await make_team(db, plan="pro")
    await queue_jobs(db, team.team_id, 1)
    async with db.transaction() as s:
        (job,) = await queue.claim(s, worker_id="w", demand=1, lease_seconds=30)
        await s.execute(text("UPDATE jobs SET provider = 'fal', provider_request_id = 'r1', provider_handle = 'app:r1' "
                             "WHERE id = :id"), {"id": job.id})
        await s.execute(text("""INSERT INTO provider_webhook_events (provider, delivery_id, request_id, state, payload)
                                VALUES ('fal', 'r1:OK', 'r1', 'succeeded', '{}')"""))
    async with db.transaction() as s:
        after = await queue.mark_awaiting_webhook(s, Fence(job.id, "w", job.attempt))
    assert after is not None and after.state == "queued"
    async with db.transaction() as s:
        state, handle = (await s.execute(text("SELECT state, provider_handle FROM jobs WHERE id = :id"), {"id": job.id})).one()
        ready = await s.scalar(text("SELECT has_ready FROM team_dispatch WHERE team_id = :t"), {"t": team.team_id})
        outcome = await s.scalar(text("SELECT outcome FROM job_attempts WHERE job_id = :id"), {"id": job.id})
    assert (state, handle, ready) == ("queued", "app:r1", True)  # a worker resumes it with the handle
    assert outcome == "retry"  # the attempt that submitted is closed


async def test_without_a_callback_the_job_waits_for_it(db) -> None:
    team = await make_team(db, plan="pro")
    await queue_jobs(db, team.team_id, 1)
    async with db.transaction() as s:
        (job,) = await queue.claim(s, worker_id="w", demand=1, lease_seconds=30)
        await s.execute(text("UPDATE jobs SET provider = 'fal', provider_request_id = 'r2' WHERE id = :id"), {"id": job.id})
    async with db.transaction() as s:
        after = await queue.mark_awaiting_webhook(s, Fence(job.id, "w", job.attempt))
    assert after is not None and after.state == "awaiting_webhook"
