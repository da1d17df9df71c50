"""A worker process killed mid-job: its lease runs out and another worker recovers the job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import text

from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.worker import Worker
from pixelmint.providers.registry import Providers
from pixelmint.storage.backend import LocalStorage
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import job_handlers, wait_for_state

pytestmark = pytest.mark.slow


def start_worker_process(database_url: str, data_dir) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PIXELMINT_DATA_DIR": str(data_dir),
        "PIXELMINT_SECRET_KEY": "test-secret",
        "PIXELMINT_PROCEDURAL_DELAY_SECONDS": "300",  # the job hangs until the process is killed
        "PIXELMINT_LEASE_SECONDS": "2",
        "PIXELMINT_LOG_LEVEL": "warning",
    }
    return subprocess.Popen([sys.executable, "-m", "pixelmint.cli", "worker"], env=env)


async def crash_mid_job(api, db, settings, database_url, *, max_attempts: int):  # type: ignore[no-untyped-def]
    settings.max_attempts = max_attempts
    team = await make_team(db, plan="basic", credits="10")
    job_id = uuid.UUID((await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]["id"])
    hub = JobEvents(database_url)
    await hub.start()
    process = start_worker_process(database_url, settings.data_dir / "w1")
    try:
        assert await wait_for_state(db, hub, job_id, {"running"}) == "running"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    settings.lease_seconds = 2
    rescuer = Worker(
        db=db, events=hub, settings=settings, providers=Providers.from_settings(settings),
        storage=LocalStorage(settings.storage_dir, "test-secret"), handlers=job_handlers(), worker_id="rescuer",
    )
    task = asyncio.create_task(rescuer.run())
    try:
        final = await wait_for_state(db, hub, job_id, {"succeeded", "failed"})
    finally:
        rescuer.stop()
        await task
        await hub.stop()
    return team, job_id, final


async def test_killed_worker_job_is_retried_by_another_worker(api, db, settings, database_url) -> None:
    team, job_id, final = await crash_mid_job(api, db, settings, database_url, max_attempts=3)
    assert final == "succeeded"
    async with db.transaction() as s:
        attempts = (await s.execute(text(
            "SELECT attempt, worker_id, outcome FROM job_attempts WHERE job_id = :id ORDER BY attempt"), {"id": job_id})).all()
        charged = await s.scalar(text("SELECT charged_credits FROM jobs WHERE id = :id"), {"id": job_id})
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "lease_expired"), (2, "succeeded")]
    assert attempts[0].worker_id != "rescuer" and attempts[1].worker_id == "rescuer"
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert float(charged) == 4.8 and balance["availableCredits"] == 5.2 and balance["reservedCredits"] == 0.0
    await assert_ledger_ok(db)


async def test_killed_worker_job_without_attempts_left_fails_and_releases(api, db, settings, database_url) -> None:
    team, job_id, final = await crash_mid_job(api, db, settings, database_url, max_attempts=1)
    assert final == "failed"
    job = (await api.get(f"/api/v1/generate/{job_id}", headers=auth(team))).json()["job"]
    assert job["error"]["code"] == "worker_lost" and "lease" in job["error"]["message"]
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert balance["availableCredits"] == 10.0 and balance["reservedCredits"] == 0.0
    await assert_ledger_ok(db)
