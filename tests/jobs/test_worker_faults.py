"""Faults at the end of a job: a success commit whose acknowledgement arrives late or never, and
an attempt that lost its job."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from pixelmint.flows.generation import image_generation
from pixelmint.jobs import queue
from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.tables import Job
from pixelmint.jobs.tasks import TaskContext, TaskOutcome
from pixelmint.jobs.worker import Worker
from pixelmint.kit.db import Database
from pixelmint.providers.registry import Providers
from pixelmint.storage.backend import LocalStorage
from pixelmint.storage.check import check_storage
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import job_handlers, queue_jobs, run_workers_until_done
from tests.jobs.pgproxy import PgProxy
from tests.storage.builders import exists


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lose", [False, True], ids=["late reply, task canceled", "reply lost, commit raised"])
async def test_a_success_acknowledged_late_keeps_its_images(api, db, settings, database_url, lose: bool) -> None:
    # Late reply: the heartbeat (every lease/3) sees the job succeeded while the worker still
    # waits for the reply to its COMMIT, and cancels the worker's task. Lost reply: the worker's
    # COMMIT raises a connection error although the server committed.
    settings.lease_seconds = 1.5
    team = await make_team(db, plan="basic", credits="20")
    reply = await api.post("/api/v1/generate", json=generate_body(numImages=2), headers=auth(team))
    job_id = uuid.UUID(reply.json()["job"]["id"])
    storage = LocalStorage(settings.storage_dir, "test-secret")
    hub = JobEvents(database_url)
    await hub.start()
    async with PgProxy(database_url, commit_marker=b"INSERT INTO images", lose=lose) as proxy:
        worker_db = Database.connect(proxy.url, pool_size=4)
        worker = Worker(db=worker_db, events=hub, settings=settings, providers=Providers.from_settings(settings),
                        storage=storage, handlers=job_handlers(), worker_id="w")
        run = asyncio.create_task(worker.run())
        try:
            # The success commit's reply is held until the task is canceled, or never delivered.
            await (proxy.held if lose else proxy.gave_up).wait()
        finally:
            worker.stop()
            await run  # also waits for the job's task to finish its own handling
            await worker_db.dispose()
            await hub.stop()
    async with db.transaction() as s:
        state, charged = (await s.execute(text("SELECT state, charged_credits FROM jobs WHERE id = :id"),
                                          {"id": job_id})).one()
        keys = (await s.scalars(text("SELECT storage_key FROM images WHERE job_id = :id"), {"id": job_id})).all()
    assert state == "succeeded" and charged > 0 and len(keys) == 2
    assert [await exists(storage, key) for key in keys] == [True, True]
    assert (await check_storage(db, storage)).missing == []  # what `pixelmint admin check-storage` reports
    await assert_ledger_ok(db)


async def test_the_outputs_of_an_attempt_that_lost_its_job_are_deleted(db, settings, database_url) -> None:
    team = await make_team(db, plan="pro")
    await queue_jobs(db, team.team_id, 1)

    async def rescued_after_storing(ctx: TaskContext, job: Job) -> TaskOutcome:
        outcome = await image_generation(ctx, job)
        if job.attempt == 1:  # the lease ran out meanwhile: the job is retried, this attempt's success is refused
            async with ctx.db.transaction() as s:
                await s.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
                                {"id": job.id})
                assert await queue.rescue_expired(s, retry_base=0, retry_cap=0)
        return outcome

    await run_workers_until_done(settings, database_url, 1, handlers=job_handlers(image_generation=rescued_after_storing))
    async with db.transaction() as s:
        keys = (await s.scalars(text("SELECT storage_key FROM images"))).all()
    files = [str(path.relative_to(settings.storage_dir)) for path in settings.storage_dir.rglob("*.png")]
    assert len(keys) == 1 and files == keys  # attempt 2's image; attempt 1's object was deleted
