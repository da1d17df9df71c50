"""The events: emitted where the change happens, in its transaction, and delivered — a real
generation that succeeds, one that fails, a canceled one, a trained model, the low-balance
threshold and a replenishment."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from standardwebhooks import Webhook

from pixelmint.credits import service as credits
from pixelmint.jobs.tasks import TaskOutcome
from pixelmint.providers.base import ProviderError
from tests.builders import assert_ledger_ok, auth, generate_body, make_team
from tests.custom_models.test_lifecycle import RED, training_files
from tests.helpers import job_handlers, run_workers_until_done
from tests.webhooks.conftest import delivering
from tests.webhooks.receiver import Receiver


async def add_endpoint(api, team, url: str, *event_types: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    created = await api.post("/api/v1/webhook-endpoints", json={"url": url, "eventTypes": list(event_types)},
                             headers=auth(team))
    assert created.status_code == 201, created.text
    return created.json()


def verified(endpoint: dict[str, Any], request) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return Webhook(endpoint["secret"]).verify(request.body, request.headers)


async def messages(db, team_id) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        rows = await session.execute(text(
            "SELECT event_type, payload FROM webhook_messages WHERE team_id = :t ORDER BY created_at"), {"t": team_id})
        return [(row.event_type, row.payload) for row in rows]


async def test_a_real_generation_sends_job_succeeded(api_with_worker, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    async with Receiver() as receiver:
        endpoint = await add_endpoint(api_with_worker, team, receiver.url, "job.succeeded", "job.failed")
        queued = await api_with_worker.post("/api/v1/generate", json=generate_body(), headers=auth(team))
        assert queued.status_code == 202, queued.text
        [request] = await receiver.wait_for(1)
    event = verified(endpoint, request)
    job = queued.json()["job"]
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job["id"]
    assert event["data"]["state"] == "succeeded" and event["data"]["chargedCredits"] == job["estimatedCredits"]
    assert event["data"]["links"]["generation"] == f"/api/v1/generate/{job['id']}"
    assert event["data"]["error"] is None and "b64" not in request.body.decode()  # links, never image bytes
    await assert_ledger_ok(db)


async def test_a_failed_and_a_canceled_generation(api, db, settings, database_url) -> None:
    team = await make_team(db, plan="basic", credits="100")
    async with Receiver() as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url)
        failing = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]

        async def broken(ctx, job) -> TaskOutcome:  # type: ignore[no-untyped-def]
            raise ProviderError("no such model at the provider", code="provider_model_not_found", retryable=False)

        await run_workers_until_done(settings, database_url, 1, handlers=job_handlers(image_generation=broken))
        canceled = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]
        assert (await api.delete(f"/api/v1/jobs/{canceled['id']}", headers=auth(team))).status_code == 200
        requests = await receiver.wait_for(2)
    events = {e["type"]: e["data"] for e in (verified(endpoint, r) for r in requests)}
    assert events["job.failed"]["id"] == failing["id"]
    assert events["job.failed"]["error"] == {"code": "provider_model_not_found", "message": "no such model at the provider"}
    assert events["job.canceled"]["id"] == canceled["id"] and events["job.canceled"]["error"]["code"] == "canceled"
    await assert_ledger_ok(db)


async def test_a_trained_model_sends_model_ready(api_with_worker, db) -> None:
    team = await make_team(db, plan="pro", credits="1000")
    async with Receiver() as receiver:
        endpoint = await add_endpoint(api_with_worker, team, receiver.url, "model.ready", "model.failed")
        created = await api_with_worker.post(
            "/api/v1/models", data={"referenceModelId": "fashion-editorial", "name": "Red"},
            files=training_files(RED), headers=auth(team),
        )
        assert created.status_code == 202, created.text
        [request] = await receiver.wait_for(1)
    event = verified(endpoint, request)
    model = created.json()["model"]
    assert event["type"] == "model.ready" and event["data"]["id"] == model["id"]
    assert event["data"]["status"] == "ready" and event["data"]["version"] == 1
    assert event["data"]["links"]["model"] == f"/api/v1/models/{model['id']}"


async def test_a_canceled_training_sends_model_failed(api, db) -> None:
    team = await make_team(db, plan="basic", credits="200")
    await add_endpoint(api, team, "https://example.com/hook", "model.failed")
    created = (await api.post("/api/v1/models", data={"referenceModelId": "business-headshot", "name": "m"},
                              files=training_files(RED[:3]), headers=auth(team))).json()
    await api.delete(f"/api/v1/jobs/{created['job']['id']}", headers=auth(team))
    [(event_type, payload)] = await messages(db, team.team_id)
    assert event_type == "model.failed" and payload["data"]["id"] == created["model"]["id"]
    assert payload["data"]["status"] == "failed"


async def test_low_balance_is_sent_once_when_the_threshold_is_crossed(api, db) -> None:
    team = await make_team(db, plan="basic", credits="10")
    await add_endpoint(api, team, "https://example.com/hook", "credits.low_balance", "credits.replenished")
    answer = await api.put("/api/v1/credits/low-balance-threshold", json={"threshold": 5}, headers=auth(team))
    assert answer.status_code == 200 and answer.json() == {"threshold": 5.0}
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).json()["lowBalanceThreshold"] == 5.0
    cost = None
    for _ in range(3):  # 10 → 6 (above) → 1.2 (crosses) → refused / or below already: no second event
        answer = await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))
        cost = cost or answer.json().get("job", {}).get("estimatedCredits")
    lows = [p for t, p in await messages(db, team.team_id) if t == "credits.low_balance"]
    assert len(lows) == 1, lows
    data = lows[0]["data"]
    assert data["threshold"] == 5.0 and data["availableCredits"] < 5 <= data["previousAvailableCredits"]
    assert data["operation"] == "image_generation"

    async with db.transaction() as session:
        await credits.replenish(session, team_id=team.team_id, amount=Decimal("500"), next_replenishment_at=None,
                                reason="monthly replenishment (test)")
    [replenished] = [p for t, p in await messages(db, team.team_id) if t == "credits.replenished"]
    assert replenished["data"]["granted"] == 500.0 and json.dumps(replenished)
    await assert_ledger_ok(db)


async def test_a_credit_api_charge_that_crosses_the_threshold_sends_low_balance_once(api, db) -> None:
    """The credit API's consume commits on its own in one statement (``credits/ledger.consume_alone``)
    unless it crosses the threshold: that one goes in a transaction with its webhook."""
    from pixelmint.credits import apps

    team = await make_team(db, plan="basic", credits="10")
    await add_endpoint(api, team, "https://example.com/hook", "credits.low_balance")
    assert (await api.put("/api/v1/credits/low-balance-threshold", json={"threshold": 5},
                          headers=auth(team))).status_code == 200
    async with db.transaction() as session:
        app = await apps.register_app(session, name="deck-app", operations={"deck": Decimal("3")})
        await apps.authorize_app(session, team_id=team.team_id, app_id=app.app_id, granted_by="admin")
    charged = []
    for _ in range(4):  # 10 → 7 (above) → 4 (crosses) → 1 (below already) → refused
        answer = await api.post("/api/v1/credits/consume", json={"teamId": str(team.team_id), "operation": "deck"},
                                headers={"Authorization": f"Bearer {app.service_key}"})
        charged.append((answer.status_code, answer.json().get("availableCredits")))
    assert charged == [(200, 7.0), (200, 4.0), (200, 1.0), (402, 1.0)], charged  # 402 says what is left
    lows = [p for t, p in await messages(db, team.team_id) if t == "credits.low_balance"]
    assert len(lows) == 1, lows
    assert (lows[0]["data"]["availableCredits"], lows[0]["data"]["previousAvailableCredits"]) == (4.0, 7.0)
    await assert_ledger_ok(db)
