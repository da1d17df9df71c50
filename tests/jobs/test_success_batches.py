"""Successes finished together (``queue.mark_succeeded_many``, the worker's group commit): each job
ends exactly as ``mark_succeeded`` would end it alone, a lost fence changes nothing, and one job's
failing ``apply`` does not cost the other jobs of its batch their success."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import text

from pixelmint.jobs import queue
from pixelmint.jobs.tables import Job
from pixelmint.jobs.tasks import TaskContext, TaskOutcome
from pixelmint.webhooks import service as webhooks
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import job_handlers, queue_jobs, run_workers_until_done
from tests.webhooks.test_events import messages

FIELDS = ("state", "charged_credits", "estimated_credits", "result", "progress", "locked_by", "lease_expires_at")


async def claim_all(db, count: int) -> list[Job]:  # type: ignore[no-untyped-def]
    """Claim as the worker "w" until ``count`` jobs are held (a claim gives a team one job)."""
    claimed: list[Job] = []
    while len(claimed) < count:
        async with db.transaction() as session:
            got = await queue.claim(session, worker_id="w", demand=count - len(claimed), lease_seconds=30)
        assert got
        claimed += got
    return claimed


async def rows(db, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        found = await session.execute(text(f"""
            SELECT j.id, {', '.join('j.' + f for f in FIELDS)}, j.finished_at IS NOT NULL AS finished,
                   a.outcome, a.finished_at IS NOT NULL AS attempt_closed, r.status AS reservation
              FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt
              LEFT JOIN credit_reservations r ON r.id = j.reservation_id
             WHERE j.id = ANY(:ids)"""), {"ids": job_ids})
        return {row.id: dict(row._mapping) for row in found}


async def test_a_batch_ends_each_job_as_it_would_end_alone(api, db) -> None:
    hooked = await make_team(db, plan="enterprise", credits="1000", name="hooked")
    other = await make_team(db, plan="enterprise", credits="1000", name="other")
    async with db.transaction() as session:
        await webhooks.create_endpoint(session, hooked.team_id, url="https://hooks.example/jobs", event_types=[],
                                       description="", allow_private=True)
    for team, count in ((hooked, 4), (other, 3)):
        for _ in range(count):
            queued = await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
            assert queued.status_code == 202, queued.text
    jobs = await claim_all(db, 7)
    by_team = {team.team_id: [job for job in jobs if job.team_id == team.team_id] for team in (hooked, other)}
    alone = [by_team[hooked.team_id][0], by_team[other.team_id][0]]
    lost = by_team[other.team_id][2]
    together = [job for job in jobs if job not in alone and job is not lost]

    async with db.transaction() as session:
        for job in alone:
            assert await queue.mark_succeeded(session, queue.Fence(job.id, "w", job.attempt), result={"n": 1})
    async with db.transaction() as session:
        done = await queue.mark_succeeded_many(session, "w", [
            *(queue.Success(queue.Fence(job.id, "w", job.attempt), {"n": 1}) for job in together),
            queue.Success(queue.Fence(lost.id, "w", lost.attempt + 1), {"n": 1}),  # not this worker's attempt
        ])
    assert set(done) == {job.id for job in together}
    assert all(job.state == "succeeded" and job.charged_credits == job.estimated_credits for job in done.values())

    ended = await rows(db, [job.id for job in jobs])
    expected = {**ended[alone[0].id], "id": None}
    assert expected["state"] == "succeeded" and expected["reservation"] == "captured" and expected["attempt_closed"]
    for job in [*alone, *together]:
        assert {**ended[job.id], "id": None, "estimated_credits": None, "charged_credits": None} == {
            **expected, "estimated_credits": None, "charged_credits": None}
        assert ended[job.id]["charged_credits"] == ended[job.id]["estimated_credits"] > 0
    assert ended[lost.id]["state"] == "running" and ended[lost.id]["reservation"] == "held"
    assert ended[lost.id]["locked_by"] == "w" and not ended[lost.id]["attempt_closed"]

    sent = await messages(db, hooked.team_id)  # the hooked team's four jobs, each announced once
    assert sorted(payload["data"]["id"] for _, payload in sent) == sorted(str(j.id) for j in by_team[hooked.team_id])
    assert {event for event, _ in sent} == {"job.succeeded"}
    one = {**next(p for _, p in sent if p["data"]["id"] == str(alone[0].id))["data"], "id": None, "links": None,
           "createdAt": None, "finishedAt": None}
    for _, payload in sent:
        assert {**payload["data"], "id": None, "links": None, "createdAt": None, "finishedAt": None} == one
    assert await messages(db, other.team_id) == []  # no endpoint: nothing written
    await assert_ledger_ok(db)


async def test_a_failing_apply_does_not_undo_the_other_successes_of_its_batch(db, settings, database_url,
                                                                               monkeypatch) -> None:
    team = await make_team(db, plan="enterprise")
    await queue_jobs(db, team.team_id, 4)
    started: list[uuid.UUID] = []
    all_started = asyncio.Event()
    batches: list[set[uuid.UUID]] = []
    real = queue.mark_succeeded_many

    async def spied(session, worker_id, successes):  # type: ignore[no-untyped-def]
        batches.append({s.fence.job_id for s in successes})
        return await real(session, worker_id, successes)

    monkeypatch.setattr(queue, "mark_succeeded_many", spied)

    async def handler(_ctx: TaskContext, job: Job) -> TaskOutcome:
        started.append(job.id)
        if len(started) == 4:
            all_started.set()
        await all_started.wait()  # all four return together: the first leads alone, the others wait

        async def broken(_session, _job) -> None:  # type: ignore[no-untyped-def]
            raise RuntimeError("apply failed")

        return TaskOutcome(result={}, apply=broken if job.id == started[1] else None)

    await run_workers_until_done(settings, database_url, 4, concurrency=4,
                                 handlers=job_handlers(image_generation=handler))
    bad = started[1]
    assert any(bad in batch and len(batch) > 1 for batch in batches), batches  # it failed in company
    async with db.transaction() as session:
        states = dict((await session.execute(text("SELECT id, state FROM jobs"))).all())
        error = await session.scalar(text("SELECT error_code FROM jobs WHERE id = :id"), {"id": bad})
    assert states == {job_id: "failed" if job_id == bad else "succeeded" for job_id in started}
    assert error == "internal_error"
    await assert_ledger_ok(db)
