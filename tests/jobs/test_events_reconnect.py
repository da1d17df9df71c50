"""The API's LISTEN connection dies (its backend is terminated, as in a PostgreSQL restart): it
reconnects, with backoff while the server is down, and the waiters still hear of their jobs —
``waitForResult`` and the SSE stream."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.worker import Worker
from pixelmint.kit.db import Database
from pixelmint.providers.registry import Providers
from pixelmint.storage.backend import LocalStorage
from tests.builders import auth, generate_body, make_team
from tests.helpers import job_handlers
from tests.jobs.pgproxy import PgProxy


@pytest.mark.timeout(60)
async def test_waiters_hear_of_their_jobs_after_the_listen_connection_was_killed(
    api, db, settings, database_url, monkeypatch
) -> None:
    settings.wait_for_result_timeout_seconds = 3600  # only the job's event can end the wait before the test's timeout
    team = await make_team(db, plan="pro", credits="100")
    events = api.app.state.runtime.events
    watched: asyncio.Queue[uuid.UUID] = asyncio.Queue()  # the jobs the API starts waiting for
    watch = events.watch
    monkeypatch.setattr(events, "watch", lambda job_id: (watched.put_nowait(job_id), watch(job_id))[1])

    async with db.transaction() as s:  # no worker runs yet: the API's connection is the only listener
        killed = await s.scalar(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND query LIKE 'LISTEN %'"))
    assert killed == 1

    streamed = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]["id"]
    stream = asyncio.create_task(api.get(f"/api/v1/jobs/{streamed}/events", headers=auth(team), timeout=None))
    waited = asyncio.create_task(
        api.post("/api/v1/generate", json=generate_body(waitForResult=True), headers=auth(team), timeout=None))
    seen = {await watched.get()}
    while len(seen) < 2:  # both requests wait on their job's events before any job runs
        seen.add(await watched.get())

    worker_db, hub = Database.connect(database_url, pool_size=4), JobEvents(database_url)
    await hub.start()
    worker = Worker(db=worker_db, events=hub, settings=settings, providers=Providers.from_settings(settings),
                    storage=LocalStorage(settings.storage_dir, "test-secret"), handlers=job_handlers(), worker_id="w")
    run = asyncio.create_task(worker.run())
    try:
        reply = await waited
        assert reply.status_code == 200 and reply.json()["job"]["status"] == "succeeded"
        events_text = (await stream).text
        assert "event: done" in events_text and '"status": "succeeded"' in events_text
    finally:
        worker.stop()
        await run
        await hub.stop()
        await worker_db.dispose()


@pytest.mark.timeout(60)
async def test_the_listener_keeps_reconnecting_while_the_server_is_down(database_url, db) -> None:
    job_id = uuid.uuid4()
    async with PgProxy(database_url) as server:
        hub = JobEvents(server.url)
        await hub.start()
        try:
            woken = hub.watch(job_id)
            server.refuse = 3  # the "restarted" server refuses the next three connections
            await server.drop_all()
            await woken.wait()  # set once the listener is back
            assert server.refused == 3 and hub.jobs_available.is_set()

            notified = hub.watch(job_id)
            async with db.transaction() as s:
                await s.execute(text("SELECT pg_notify('pixelmint_job_events', :payload)"), {"payload": f"{job_id} running"})
            await notified.wait()  # and it listens again
        finally:
            await hub.stop()


@pytest.mark.timeout(60)
async def test_a_half_open_listen_connection_is_given_up_and_replaced(database_url, db) -> None:
    """The connection stays open but nothing gets through (a partition): the ping notices within
    its timeout, the listener reconnects and hears notifications again."""
    job_id = uuid.uuid4()
    async with PgProxy(database_url) as server:
        hub = JobEvents(server.url, ping_seconds=0.1, ping_timeout_seconds=0.5)
        await hub.start()
        try:
            woken = hub.watch(job_id)
            server.freeze_all()
            await woken.wait()  # set once the listener is back on a new connection

            notified = hub.watch(job_id)
            async with db.transaction() as s:
                await s.execute(text("SELECT pg_notify('pixelmint_job_events', :payload)"), {"payload": f"{job_id} running"})
            await notified.wait()
        finally:
            await hub.stop()
