"""Cancelling a running job, and ``waitForResult`` running out of time."""

from __future__ import annotations

import uuid

from pixelmint.jobs.events import JobEvents
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.helpers import wait_for_state


async def test_wait_for_result_answers_202_when_time_runs_out(api, db, settings) -> None:
    settings.wait_for_result_timeout_seconds = 0.3  # no worker runs: the job stays queued
    team = await make_team(db, plan="basic")
    response = await api.post("/api/v1/generate", json=generate_body(waitForResult=True), headers=auth(team))
    assert response.status_code == 202 and response.json()["job"]["status"] == "queued"


async def test_cancel_running_job_stops_it_and_releases_credits(settings, database_url, db) -> None:
    settings.procedural_delay_seconds = 300  # the job would run "forever"
    from tests.conftest import _client

    team = await make_team(db, plan="basic", credits="10")
    hub = JobEvents(database_url)
    await hub.start()
    try:
        async for api in _client(settings, database_url, run_worker=True):
            job = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]
            job_id = uuid.UUID(job["id"])
            await wait_for_state(db, hub, job_id, {"running"})
            reply = await api.delete(f"/api/v1/generate/{job_id}", headers=auth(team))
            assert reply.status_code == 200
            assert await wait_for_state(db, hub, job_id, {"canceled", "succeeded", "failed"}) == "canceled"
            balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
            assert balance["availableCredits"] == 10.0 and balance["reservedCredits"] == 0.0
            history = (await api.get("/api/v1/credits/history", headers=auth(team))).json()["items"]
            assert [t["type"] for t in history] == ["release", "reserve", "grant"]
    finally:
        await hub.stop()
    await assert_ledger_ok(db)
