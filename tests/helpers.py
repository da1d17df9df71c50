"""Awaiting job states through the real LISTEN/NOTIFY events (no sleep loops), and lock waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from sqlalchemy import text

from pixelmint.jobs.events import JobEvents, watch_job
from pixelmint.kit.db import Database


async def wait_for_state(db: Database, hub: JobEvents, job_id: uuid.UUID, states: set[str], timeout: float = 60) -> str:
    """Wait until the job is in one of ``states``, woken by its NOTIFY events (``watch_job``)."""
    state = None
    async with contextlib.aclosing(watch_job(db, hub, job_id, timeout=timeout)) as updates:
        async for job in updates:
            state = job.state if job is not None else None
            if state in states:
                return state
    raise TimeoutError(f"job {job_id} is still {state}, not in {states}")


NOOP_PARAMS = (
    '{"prompt": "p", "negativePrompt": null, "width": 64, "height": 64, "quality": "standard", '
    '"numImages": 1, "seed": 1, "modelKey": "business-headshot"}'
)


async def queue_jobs(db: Database, team_id: uuid.UUID, count: int) -> None:
    """Insert ``count`` queued 64×64 generation jobs (no credits held) and flag the team ready."""
    async with db.transaction() as s:
        await s.execute(
            text("""
                INSERT INTO jobs (team_id, type, params, provider, estimated_credits, reference_model_id, created_at)
                SELECT :t, 'image_generation', CAST(:p AS jsonb), 'procedural', 0, 'business-headshot',
                       clock_timestamp() FROM generate_series(1, :n)
            """),
            {"t": team_id, "n": count, "p": NOOP_PARAMS},
        )
        await s.execute(text("UPDATE team_dispatch SET has_ready = true WHERE team_id = :t"), {"t": team_id})


def job_handlers(**overrides) -> dict:  # type: ignore[no-untyped-def]
    """Every job type's handler, registered as the app and the worker do, with ``overrides``."""
    from pixelmint.api.runtime import register_job_types

    return {**register_job_types().handlers, **overrides}


async def run_workers_until_done(
    settings, database_url: str, total: int, *, workers: int = 1, concurrency: int = 4, handlers=None,  # type: ignore[no-untyped-def]
    timeout: float = 120,
) -> None:
    """Run ``workers`` workers (each with its own pool and LISTEN connection) until ``total`` jobs
    have reached a final state, counted from their NOTIFY events."""
    from pixelmint.jobs.worker import Worker
    from pixelmint.providers.registry import Providers
    from pixelmint.storage.backend import LocalStorage

    done = asyncio.Event()
    finished = 0

    def count(_job_id: uuid.UUID, state: str) -> None:
        nonlocal finished
        if state in ("succeeded", "failed", "canceled"):
            finished += 1
            if finished >= total:
                done.set()

    started = []
    try:
        for i in range(workers):
            database = Database.connect(database_url, pool_size=concurrency + 2)
            hub = JobEvents(database_url)
            await hub.start()
            if i == 0:
                hub.add_state_listener(count)
            worker = Worker(
                db=database, events=hub, settings=settings, providers=Providers.from_settings(settings),
                storage=LocalStorage(settings.storage_dir, "s"), concurrency=concurrency, worker_id=f"w{i}",
                handlers=handlers or job_handlers(),
            )
            started.append((worker, asyncio.create_task(worker.run()), hub, database))
        await asyncio.wait_for(done.wait(), timeout=timeout)
    finally:
        for worker, *_ in started:
            worker.stop()
        for _, task, hub, database in started:
            await task
            await hub.stop()
            await database.dispose()


def wait_for_http(url: str, process, *, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Until ``url`` answers 200: a server in another process has no event to await, so poll,
    bounded, failing at once if the process exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"the server for {url} exited"
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
        time.sleep(0.05)


async def wait_for_lock_wait(db: Database, count: int = 1) -> None:
    """Until ``count`` backends of the test database wait on a lock (a condition, polled; no fixed sleep)."""
    for _ in range(1000):
        async with db.transaction() as s:
            waiting = await s.scalar(text("""SELECT count(*) FROM pg_stat_activity
                                               WHERE datname = current_database() AND wait_event_type = 'Lock'"""))
        if waiting >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no backend started waiting for the lock")
