"""A prediction's own webhook (``webhook``, ``webhook_events_filter``), through the official
``replicate`` SDK, unmodified, against a live Pixelmint: ``start`` and ``completed`` arrive at a
local receiver, signed with the team's default secret (``client.webhooks.default.secret()``) as
``replicate.webhooks.validate`` and ``standardwebhooks`` check, carrying the prediction as
``GET /v1/predictions/{id}`` answers it; the filter is honoured; a canceled prediction says so; a
rolled-back change emits nothing; a private URL is refused when private addresses are not allowed.
Deliveries are awaited as they arrive (the receiver's condition), never slept for."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate.webhook import WebhookSigningSecret
from sqlalchemy import text
from standardwebhooks import Webhook

from pixelmint.api.app import create_app
from pixelmint.compat.replicate.service import wants
from pixelmint.jobs import queue
from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from tests.api.test_metrics import delta, scrape
from tests.builders import assert_ledger_ok, auth, make_team
from tests.compat.test_replicate_api import INPUT, MODEL, balance, occupy_slot, sdk
from tests.providers.localserver import LocalServer
from tests.webhooks.conftest import eventually
from tests.webhooks.receiver import Received, Receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.allow_private_urls = True  # the receiver listens on 127.0.0.1
    settings.webhook_retry_schedule_seconds = [0, 0.2, 0.2]
    settings.webhook_poll_interval_seconds = 1.0
    return settings


def verified(request: Received, secret: WebhookSigningSecret) -> dict[str, Any]:
    """The body of a delivery, after both checks of its signature: the SDK's and the Standard
    Webhooks library's."""
    replicate.webhooks.validate(headers=request.headers, body=request.body.decode(), secret=secret, tolerance=300)
    payload: dict[str, Any] = Webhook(secret.key).verify(request.body, request.headers)
    assert payload == json.loads(request.body)
    return payload


async def messages(db: Database, team_id: uuid.UUID) -> list[tuple[str, str, str]]:
    """What the outbox holds for the team: ``(label, prediction id, status)``, oldest first."""
    async with db.transaction() as session:
        rows = await session.execute(text("""
            SELECT event_type, payload->>'id' AS id, payload->>'status' AS status FROM webhook_messages
             WHERE team_id = :t ORDER BY created_at, event_type DESC
        """), {"t": team_id})
        return [(row.event_type, row.id, row.status) for row in rows]


def delivered(db: Database, team_id: uuid.UUID, count: int):  # type: ignore[no-untyped-def]
    """A check for ``eventually``: the team's ``count`` deliveries all recorded as succeeded."""
    async def check() -> bool:
        async with db.transaction() as session:
            statuses = (await session.scalars(text("""
                SELECT d.status FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
                 WHERE m.team_id = :t
            """), {"t": team_id})).all()
        return len(statuses) == count and all(status == "succeeded" for status in statuses)
    return check


async def test_start_and_completed_arrive_signed_with_the_prediction(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(live_service, team)
    metrics = httpx.AsyncClient(base_url=live_service)
    before = await scrape(metrics)
    async with Receiver() as receiver:
        secret = await asyncio.to_thread(client.webhooks.default.secret)
        assert secret.key.startswith("whsec_")
        assert await asyncio.to_thread(client.webhooks.default.secret) == secret  # the same key every time
        prediction = await asyncio.to_thread(
            client.predictions.create, version=MODEL, input={**INPUT, "num_outputs": 2},
            webhook=f"{receiver.url}/replicate?token=abc")
        requests = await receiver.wait_for(2)
        await eventually(delivered(db, team.team_id, 2))
    await asyncio.to_thread(prediction.reload)
    assert prediction.status == "succeeded"

    assert [r.path for r in requests] == ["/replicate"] * 2
    payloads = {payload["status"]: payload for payload in (verified(r, secret) for r in requests)}
    assert set(payloads) == {"processing", "succeeded"}  # the deliveries run concurrently: either may land first
    start, completed = payloads["processing"], payloads["succeeded"]
    assert start["id"] == completed["id"] == prediction.id
    assert start["started_at"] and start["completed_at"] is None and start["output"] is None
    assert start["input"]["prompt"] == INPUT["prompt"] and start["urls"]["get"].startswith(live_service)
    # The completed one is the prediction as GET answers it (its signed URLs signed a moment apart).
    got = (await asyncio.to_thread(client.predictions.get, prediction.id)).dict()
    assert {k: v for k, v in completed.items() if k != "output"} == {
        k: v for k, v in got.items() if k not in ("output", "data_removed", "source")} | {
        "data_removed": False, "source": "api"}
    assert [u.split("?")[0] for u in completed["output"]] == [u.split("?")[0] for u in got["output"]]
    for url in completed["output"]:
        assert httpx.get(url).status_code == 200  # the delivered links work
    assert replicate.prediction.Prediction(**completed).status == "succeeded"
    # One message per event, each labelled, in the team's outbox; a wrong secret fails both checks.
    assert await messages(db, team.team_id) == [
        ("prediction.start", prediction.id, "processing"), ("prediction.completed", prediction.id, "succeeded")]
    other = WebhookSigningSecret(key="whsec_" + "QUFB" * 8)
    with pytest.raises(replicate.webhook.InvalidSignatureError):
        replicate.webhooks.validate(headers=requests[0].headers, body=requests[0].body.decode(), secret=other)
    # Counted once per attempt (kit/metrics.py), as /metrics shows.
    after = await scrape(metrics)
    await metrics.aclose()
    assert delta(before, after, "pixelmint_webhook_deliveries_total", outcome="succeeded") == 2
    assert delta(before, after, "pixelmint_webhook_deliveries_total", outcome="failed") == 0
    await assert_ledger_ok(db)


async def test_the_filter_is_honoured(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    client = sdk(live_service, team)
    async with Receiver() as receiver:
        secret = await asyncio.to_thread(client.webhooks.default.secret)
        only_completed = await asyncio.to_thread(
            client.predictions.create, version=MODEL, input=INPUT, webhook=receiver.url,
            webhook_events_filter=["completed"])
        [request] = await receiver.wait_for(1)
        assert verified(request, secret)["status"] == "succeeded"
        # The start was never queued: it would be in the outbox before the finish.
        assert await messages(db, team.team_id) == [("prediction.completed", only_completed.id, "succeeded")]

        only_start = await asyncio.to_thread(
            client.predictions.create, version=MODEL, input=INPUT, webhook=receiver.url,
            webhook_events_filter=["start"], wait=True)
        assert only_start.status == "succeeded"
        requests = await receiver.wait_for(2)
        assert verified(requests[1], secret)["status"] == "processing"
        # Output: delivered with the finish (the images arrive all at once).
        output = await asyncio.to_thread(
            client.predictions.create, version=MODEL, input=INPUT, webhook=receiver.url,
            webhook_events_filter=["output"], wait=True)
        requests = await receiver.wait_for(3)
        assert verified(requests[2], secret)["output"] and verified(requests[2], secret)["id"] == output.id
        await eventually(delivered(db, team.team_id, 3))
    assert [label for label, _, _ in await messages(db, team.team_id)] == [
        "prediction.completed", "prediction.start", "prediction.completed"]
    await assert_ledger_ok(db)


async def test_a_training_delivers_its_new_version(live_service, db) -> None:
    team = await make_team(db, plan="pro", credits="1000")
    client = sdk(live_service, team)
    images = await asyncio.to_thread(client.run, MODEL, input={**INPUT, "num_outputs": 3})  # training data
    base = (await asyncio.to_thread(client.models.get, "pixelmint/fashion-editorial")).latest_version
    async with Receiver() as receiver:
        secret = await asyncio.to_thread(client.webhooks.default.secret)
        training = await asyncio.to_thread(
            client.trainings.create, model="pixelmint/fashion-editorial", version=base.id,
            input={"input_images": images, "trigger_word": "ohwx", "steps": 500},
            destination=f"{team.team_id}/hooked", webhook=receiver.url, webhook_events_filter=["completed"])
        [request] = await receiver.wait_for(1)
    payload = verified(request, secret)
    got = await asyncio.to_thread(client.trainings.get, training.id)
    assert payload["id"] == training.id and payload["status"] == got.status == "succeeded"
    # Queued after the new version was made, in the same transaction: the output names it.
    assert payload["output"] == got.output and payload["output"]["version"].startswith(f"{team.team_id}/")
    assert await messages(db, team.team_id) == [("training.completed", training.id, "succeeded")]
    await assert_ledger_ok(db)


def test_which_events_a_filter_takes() -> None:
    everything = ("start", "output", "logs", "completed")
    assert wants(everything, "start", "running") and wants(everything, "completed", "failed")
    assert not wants(("completed",), "start", "running") and not wants(("start",), "completed", "succeeded")
    assert wants(("output",), "completed", "succeeded") and not wants(("output",), "completed", "canceled")
    assert wants(("logs",), "completed", "failed")


async def test_a_canceled_prediction_says_so_and_a_rolled_back_change_emits_nothing(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    await occupy_slot(db, team)  # the prediction stays queued
    client = sdk(live_service, team)
    async with Receiver() as receiver:
        secret = await asyncio.to_thread(client.webhooks.default.secret)
        prediction = await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT,
                                             webhook=receiver.url)
        assert prediction.status == "starting"

        # Canceled in a transaction that rolls back: the delivery it queued goes with it.
        class RolledBack(Exception):
            pass

        with pytest.raises(RolledBack):
            async with db.transaction() as session:
                job = await queue.cancel(session, job_id=uuid.UUID(prediction.id), team_id=team.team_id)
                assert job is not None and job.state == "canceled"
                inside = await session.scalar(text("SELECT count(*) FROM webhook_messages WHERE team_id = :t"),
                                              {"t": team.team_id})
                assert inside == 1
                raise RolledBack
        assert await messages(db, team.team_id) == []

        await asyncio.to_thread(prediction.cancel)
        assert prediction.status == "canceled"
        [request] = await receiver.wait_for(1)
    payload = verified(request, secret)
    assert payload["id"] == prediction.id and payload["status"] == "canceled" and payload["output"] is None
    assert payload["completed_at"] and payload["started_at"] is None  # it never started: no start event
    assert await messages(db, team.team_id) == [("prediction.completed", prediction.id, "canceled")]
    assert balance(live_service, team)["reservedCredits"] == 0
    await assert_ledger_ok(db)


async def test_a_refused_creation_queues_nothing(live_service, db) -> None:
    team = await make_team(db, plan="basic", credits="0")
    client = sdk(live_service, team)
    with pytest.raises(ReplicateError) as refused:  # 402: the creation rolls back, webhook and all
        await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT,
                                webhook="http://127.0.0.1:9/hook")
    assert refused.value.status == 402
    assert await messages(db, team.team_id) == []
    async with db.transaction() as session:
        assert await session.scalar(text("SELECT count(*) FROM jobs WHERE team_id = :t"), {"t": team.team_id}) == 0
    await assert_ledger_ok(db)


async def test_a_private_webhook_url_is_refused_unless_allowed(settings, database_url, db) -> None:
    strict = settings.model_copy(update={"allow_private_urls": False})
    team = await make_team(db, plan="basic", credits="100")
    with LocalServer(create_app(strict, database_url), lifespan="on", start_timeout=30) as server:
        client = sdk(server.url, team)
        for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "https://10.1.2.3/hook", "http://[::1]/"):
            with pytest.raises(ReplicateError) as refused:
                await asyncio.to_thread(client.predictions.create, version=MODEL, input=INPUT, webhook=url)
            assert refused.value.status == 422 and refused.value.title == "Webhook url not allowed", url
        answer = httpx.post(f"{server.url}/replicate/v1/predictions", headers=auth(team),
                            json={"version": MODEL, "input": INPUT, "webhook_completed": "http://127.0.0.1/x"})
        assert answer.status_code == 422
        assert answer.json()["code"] == "webhook_url_not_allowed" and answer.json()["field"] == "webhook_completed"
        # Nothing was reserved or queued.
        assert balance(server.url, team)["reservedCredits"] == 0
        assert len(await asyncio.to_thread(client.predictions.list)) == 0
    await assert_ledger_ok(db)
