"""Generation through a real remote provider protocol (the fake fal server of tests/providers)
with the whole service running as an HTTP server: polling mode, webhook mode with signed
callbacks (duplicates and bad signatures change nothing), provider failures that release, and a
callback's job whose outputs cannot be stored (retried by the worker, never left waiting)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from pixelmint.api.app import create_app
from pixelmint.jobs.events import JobEvents
from tests.builders import assert_ledger_ok, auth, make_team
from tests.helpers import wait_for_state
from tests.providers.fake_fal import GOOD_KEY, USER_ID, FakeFal, sign_fal
from tests.providers.localserver import LocalServer

pytestmark = pytest.mark.slow


def ServiceServer(app) -> LocalServer:  # noqa: N802 - reads like the class it returns
    """The app under uvicorn in a thread, lifespan on (its own pool, worker and event loop)."""
    return LocalServer(app, lifespan="on", start_timeout=30)


@pytest.fixture
def fal_settings(settings, fake_fal: FakeFal):  # type: ignore[no-untyped-def]
    settings.fal_key = GOOD_KEY
    settings.fal_base_url = settings.fal_rest_url = settings.fal_cdn_url = fake_fal.base
    settings.fal_webhook_jwks_url = f"{fake_fal.base}/.well-known/jwks.json"
    settings.provider_poll_interval_seconds = 0.01
    settings.provider_poll_max_interval_seconds = 0.05
    settings.default_provider = "fal"
    return settings


def generate(client: httpx.Client, team, **overrides):  # type: ignore[no-untyped-def]
    body = {"referenceModelId": "fashion-editorial", "prompt": "a red coat", "resolution": "512x512",
            "waitForResult": True, **overrides}
    return client.post("/api/v1/generate", json=body, headers=auth(team), timeout=60)


async def test_polling_mode(fal_settings, database_url, db) -> None:
    team = await make_team(db, plan="pro", credits="100")
    with ServiceServer(create_app(fal_settings, database_url)) as service, httpx.Client(base_url=service.url) as client:
        reply = generate(client, team, numImages=2)
        assert reply.status_code == 200, reply.text
        job = reply.json()["job"]
        assert job["status"] == "succeeded" and job["provider"] == "fal" and len(job["images"]) == 2
        assert job["result"]["provider"]["requestId"] and job["chargedCredits"] == job["estimatedCredits"]
        assert client.get(job["images"][0]["url"]).headers["content-type"] == "image/png"

        failed = generate(client, team, prompt="[fail] a coat").json()["job"]
        assert failed["status"] == "failed" and failed["error"]["code"].startswith("provider_")
    balance = await _balance(db, team)
    assert balance == (100 - 14.4, 0)  # 5 × 1 × 1 × 1.2 (complexity) × 1.2 × 2 images = 14.40; the failure released
    await assert_ledger_ok(db)


async def test_webhook_mode_finishes_exactly_once(fal_settings, fake_fal: FakeFal, database_url, db) -> None:
    team = await make_team(db, plan="pro", credits="100")
    app = create_app(fal_settings, database_url)
    with ServiceServer(app) as service, httpx.Client(base_url=service.url) as client:
        fal_settings.public_url = service.url  # callbacks come back to this server
        reply = generate(client, team)
        assert reply.status_code == 200, reply.text
        job = reply.json()["job"]
        assert job["status"] == "succeeded" and len(job["images"]) == 1
        async with db.transaction() as s:
            request_id = await s.scalar(text("SELECT provider_request_id FROM jobs WHERE id = :id"), {"id": uuid.UUID(job["id"])})
            events = await s.scalar(text("SELECT count(*) FROM provider_webhook_events"))
        assert request_id and events == 1 and job["result"]["provider"]["requestId"] == request_id

        # The same delivery again: a duplicate, nothing changes.
        body = json.dumps({"request_id": request_id, "gateway_request_id": request_id, "status": "OK",
                           "payload": {"images": []}}).encode()
        timestamp = str(int(time.time()))
        headers = {"content-type": "application/json", "x-fal-webhook-request-id": request_id,
                   "x-fal-webhook-user-id": USER_ID, "x-fal-webhook-timestamp": timestamp,
                   "x-fal-webhook-signature": sign_fal(fake_fal.key, request_id, USER_ID, timestamp, body)}
        again = client.post("/api/v1/webhooks/fal", content=body, headers=headers)
        assert again.status_code == 200 and again.json()["status"] in ("duplicate", "ignored")
        forged = client.post("/api/v1/webhooks/fal", content=body.replace(b"OK", b"ERROR"), headers=headers)
        assert forged.status_code == 401
        assert client.post("/api/v1/webhooks/replicate", content=b"{}").status_code == 404

        failing = generate(client, team, prompt="[fail] coat").json()["job"]
        assert failing["status"] == "failed" and failing["error"]["code"] == "provider_job_failed"
    async with db.transaction() as s:
        states = dict((await s.execute(text("SELECT state, count(*) FROM jobs GROUP BY state"))).all())
    assert states == {"succeeded": 1, "failed": 1}
    assert await _balance(db, team) == (100 - 7.2, 0)
    await assert_ledger_ok(db)


def break_storage(settings) -> Path:  # type: ignore[no-untyped-def]
    """A file where the generated images' directory belongs: every store fails with a real OSError
    (as root too) until the file is removed."""
    blocker = settings.storage_dir / "generated"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")
    return blocker


async def test_a_callbacks_job_that_cannot_store_its_outputs_is_retried_then_failed_and_released(
    fal_settings, database_url, db
) -> None:
    fal_settings.max_attempts = 3
    break_storage(fal_settings)
    team = await make_team(db, plan="pro", credits="100")
    hub = JobEvents(database_url)
    await hub.start()
    try:
        with ServiceServer(create_app(fal_settings, database_url)) as service, httpx.Client(base_url=service.url) as client:
            fal_settings.public_url = service.url  # callbacks come back to this server
            job_id = uuid.UUID(generate(client, team, waitForResult=False).json()["job"]["id"])
            assert await wait_for_state(db, hub, job_id, {"succeeded", "failed"}) == "failed"
    finally:
        await hub.stop()
    async with db.transaction() as s:
        code = await s.scalar(text("SELECT error_code FROM jobs WHERE id = :id"), {"id": job_id})
        attempts = (await s.execute(text("SELECT attempt, outcome FROM job_attempts WHERE job_id = :id ORDER BY attempt"),
                                    {"id": job_id})).all()
        events = await s.scalar(text("SELECT count(*) FROM provider_webhook_events WHERE job_id = :id"), {"id": job_id})
    # Attempt 1 submitted and handed over to the callback, which gave the job back to the workers.
    assert code == "storage_error" and [tuple(a) for a in attempts] == [(1, "retry"), (2, "retry"), (3, "failed")]
    assert events == 1 and await _balance(db, team) == (100, 0)
    await assert_ledger_ok(db)


async def test_a_callbacks_job_is_finished_by_a_worker_once_storage_works_again(fal_settings, database_url, db) -> None:
    fal_settings.retry_base_seconds = fal_settings.retry_max_seconds = 3600  # the retry waits for the test
    blocker = break_storage(fal_settings)
    team = await make_team(db, plan="pro", credits="100")
    hub = JobEvents(database_url)
    await hub.start()
    try:
        with ServiceServer(create_app(fal_settings, database_url)) as service, httpx.Client(base_url=service.url) as client:
            fal_settings.public_url = service.url
            job_id = uuid.UUID(generate(client, team, waitForResult=False).json()["job"]["id"])
            await _wait_for_storage_error(db, hub, job_id)
            blocker.unlink()
            async with db.transaction() as s:  # retry now
                await s.execute(text("UPDATE jobs SET run_at = now() WHERE id = :id"), {"id": job_id})
                await s.execute(text("SELECT pg_notify('pixelmint_jobs', '')"))
            assert await wait_for_state(db, hub, job_id, {"succeeded", "failed"}) == "succeeded"
            job = client.get(f"/api/v1/generate/{job_id}", headers=auth(team)).json()["job"]
            assert len(job["images"]) == 1 and client.get(job["images"][0]["url"]).status_code == 200
    finally:
        await hub.stop()
    assert await _balance(db, team) == (100 - 7.2, 0)
    await assert_ledger_ok(db)


async def _wait_for_storage_error(db, hub: JobEvents, job_id: uuid.UUID) -> None:  # type: ignore[no-untyped-def]
    """Until an attempt failed to store the outputs and the job waits for its retry."""
    while True:
        changed = hub.watch(job_id)
        try:
            async with db.transaction() as s:
                state, code = (await s.execute(text("SELECT state, error_code FROM jobs WHERE id = :id"),
                                               {"id": job_id})).one()
            if (state, code) == ("queued", "storage_error"):
                return
            assert state in ("queued", "running", "awaiting_webhook"), state
            await asyncio.wait_for(changed.wait(), 60)
        finally:
            hub.unwatch(job_id, changed)


async def _balance(db, team):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        row = (await s.execute(text(
            "SELECT allocation_credits + bonus_credits AS available, reserved_credits FROM credit_balances WHERE team_id = :t"),
            {"t": team.team_id})).one()
    return float(row.available), float(row.reserved_credits)
