"""Delivery against real HTTP receivers: signatures (Standard Webhooks), retries on the schedule,
410 disabling, redirects as failures, the SSRF guard, resend, replay, secret rotation, and the
outbox written in the caller's transaction."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from pixelmint.webhooks import service
from tests.api.test_metrics import delta, scrape
from tests.builders import auth, make_team
from tests.webhooks.conftest import delivering, eventually
from tests.webhooks.receiver import Receiver


async def add_endpoint(api, team, url: str, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    created = await api.post("/api/v1/webhook-endpoints", json={"url": url, **body}, headers=auth(team))
    assert created.status_code == 201, created.text
    return created.json()


async def emit(db, team_id: uuid.UUID, event_type: str = "job.succeeded", **data: Any) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        return await service.emit(session, team_id, event_type, {"id": str(uuid.uuid4()), **data})


async def deliveries(api, team, endpoint_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    page = await api.get(f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=auth(team))
    assert page.status_code == 200, page.text
    return page.json()["items"]


def settled(api, team, endpoint_id: str, status: str):  # type: ignore[no-untyped-def]
    async def check() -> list[dict[str, Any]] | None:
        items = await deliveries(api, team, endpoint_id)
        return items if items and all(d["status"] == status for d in items) else None
    return check


async def test_fails_then_succeeds_signed_the_same_way_each_time(api, db, settings) -> None:
    team = await make_team(db)
    async with Receiver(script=[(500, {}), (503, {})]) as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url + "/hooks", eventTypes=["job.succeeded"])
        assert endpoint["secret"].startswith("whsec_") and endpoint["eventTypes"] == ["job.succeeded"]
        assert await emit(db, team.team_id, "job.failed") == 0  # not an event this endpoint takes
        assert await emit(db, team.team_id, links={"job": "/api/v1/jobs/x"}) == 1
        requests = await receiver.wait_for(3)
        [delivery] = await eventually(settled(api, team, endpoint["id"], "succeeded"))

    assert [r.path for r in requests] == ["/hooks"] * 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1  # the same message on every attempt
    for request in requests:
        payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
        assert payload["type"] == "job.succeeded" and payload["data"]["links"] == {"job": "/api/v1/jobs/x"}
        assert payload["timestamp"].endswith("Z") and request.headers["content-type"] == "application/json"
    assert delivery["attempts"] == 3 and delivery["lastStatusCode"] == 204 and delivery["nextAttemptAt"] is None
    assert [(a["attempt"], a["statusCode"], a["succeeded"]) for a in delivery["log"]] == [
        (1, 500, False), (2, 503, False), (3, 204, True)]
    assert delivery["log"][0]["response"] == "answer 500" and delivery["log"][0]["error"] == "HTTP 500"
    assert delivery["eventType"] == "job.succeeded"
    assert f"msg_{uuid.UUID(delivery['messageId']).hex}" == requests[0].headers["webhook-id"]
    endpoint_now = (await api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=auth(team))).json()
    assert endpoint_now["enabled"] and endpoint_now["failingSince"] is None and "secret" not in endpoint_now


async def test_schedule_spent_fails_the_delivery_and_retry_after_is_honoured(api, db, settings) -> None:
    settings.webhook_retry_schedule_seconds = [0, 0.1]
    team = await make_team(db)
    async with Receiver(script=[(429, {"Retry-After": "1"}), (500, {})]) as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url)
        await emit(db, team.team_id)
        [delivery] = await eventually(settled(api, team, endpoint["id"], "failed"))
    assert [a["statusCode"] for a in delivery["log"]] == [429, 500]
    first, second = (dt.datetime.fromisoformat(a["at"]) for a in delivery["log"])
    assert second - first >= dt.timedelta(seconds=0.9)  # waited for Retry-After, not the 0.1 s of the schedule
    assert len(receiver.requests) == 2


async def test_410_gone_disables_the_endpoint(api, db, settings) -> None:
    team = await make_team(db)
    async with Receiver(script=[(410, {})]) as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url)
        await emit(db, team.team_id)
        [delivery] = await eventually(settled(api, team, endpoint["id"], "failed"))
    assert delivery["attempts"] == 1 and delivery["lastStatusCode"] == 410 and "410" in delivery["lastError"]
    endpoint = (await api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=auth(team))).json()
    assert endpoint["enabled"] is False and "410" in endpoint["disabledReason"]
    assert await emit(db, team.team_id) == 0  # a disabled endpoint gets nothing new
    enabled = await api.patch(f"/api/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True}, headers=auth(team))
    assert enabled.json()["enabled"] is True and enabled.json()["disabledReason"] is None
    assert await emit(db, team.team_id) == 1


async def test_every_recorded_attempt_is_counted_in_the_metrics_by_outcome(api, db, settings) -> None:
    team = await make_team(db)
    before = await scrape(api)
    async with Receiver(script=[(500, {}), (410, {})]) as failing, Receiver() as working, delivering(db, settings):
        endpoint = await add_endpoint(api, team, failing.url)
        await emit(db, team.team_id)
        await eventually(settled(api, team, endpoint["id"], "failed"))  # 500, then 410: switched off
        other = await add_endpoint(api, team, working.url)
        await emit(db, team.team_id)  # the disabled endpoint takes nothing new
        await eventually(settled(api, team, other["id"], "succeeded"))
    after = await scrape(api)
    counted = {outcome: delta(before, after, "pixelmint_webhook_deliveries_total", outcome=outcome)
               for outcome in ("succeeded", "failed", "disabled")}
    assert counted == {"succeeded": 1, "failed": 1, "disabled": 1}


async def test_a_redirect_is_a_failure_and_is_not_followed(api, db, settings) -> None:
    settings.webhook_retry_schedule_seconds = [0]
    team = await make_team(db)
    async with Receiver() as receiver, delivering(db, settings):
        receiver.script.append((307, {"Location": receiver.url + "/elsewhere"}))
        endpoint = await add_endpoint(api, team, receiver.url + "/hook")
        await emit(db, team.team_id)
        [delivery] = await eventually(settled(api, team, endpoint["id"], "failed"))
    assert delivery["lastStatusCode"] == 307 and "not followed" in delivery["lastError"]
    assert [r.path for r in receiver.requests] == ["/hook"]


async def test_an_endpoint_failing_for_too_long_is_disabled(api, db, settings) -> None:
    settings.webhook_disable_after_seconds = 0  # "5 days" for the test: the second failure in a row
    team = await make_team(db)
    async with Receiver(script=[(500, {}), (500, {})]) as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url)
        await emit(db, team.team_id)
        await receiver.wait_for(2)

        async def disabled() -> dict[str, Any] | None:
            now = (await api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=auth(team))).json()
            return now if not now["enabled"] else None

        now = await eventually(disabled)
        [delivery] = await eventually(settled(api, team, endpoint["id"], "failed"))
    assert "every attempt failed since" in now["disabledReason"] and now["failingSince"]
    assert delivery["lastError"] == "the endpoint is disabled" and len(receiver.requests) == 2


async def test_private_addresses_are_refused_at_creation_and_at_delivery(api, db, settings) -> None:
    settings.allow_private_urls = False
    settings.webhook_retry_schedule_seconds = [0]
    team = await make_team(db)
    async with Receiver() as receiver:
        for url in (receiver.url, "http://localhost:9/x", "http://[::1]/x", "http://10.0.0.1/x", "http://169.254.169.254/"):
            refused = await api.post("/api/v1/webhook-endpoints", json={"url": url}, headers=auth(team))
            assert refused.status_code == 422 and refused.json()["error"] == "webhook_url_not_allowed", url
        for url in ("ftp://example.com/x", "https://user:pw@example.com/x", "/relative", "https://example.com/#frag"):
            bad = await api.post("/api/v1/webhook-endpoints", json={"url": url}, headers=auth(team))
            assert bad.status_code == 422 and bad.json()["error"] in ("invalid_webhook_url", "invalid_request"), url
        # An ad-hoc target (a per-prediction webhook) is checked when it is sent.
        async with db.transaction() as session:
            queued = await service.emit_to_url(session, team.team_id, receiver.url, "prediction.completed", {"id": "p"})
        async with delivering(db, settings):
            async def failed() -> Any:
                async with db.transaction() as session:
                    return (await session.execute(text(
                        "SELECT status, last_error FROM webhook_deliveries WHERE id = :id AND status = 'failed'"),
                        {"id": queued.delivery_id})).one_or_none()
            row = await eventually(failed)
    assert "private network" in row.last_error and receiver.requests == []


async def test_resend_sends_the_same_message_again(api, db, settings) -> None:
    team = await make_team(db)
    async with Receiver() as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url)
        await emit(db, team.team_id)
        [first] = await eventually(settled(api, team, endpoint["id"], "succeeded"))
        resent = await api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries/{first['id']}/resend",
                                headers=auth(team))
        assert resent.status_code == 202 and resent.json()["status"] == "pending", resent.text
        requests = await receiver.wait_for(2)
        items = await eventually(settled(api, team, endpoint["id"], "succeeded"))
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    assert requests[0].body == requests[1].body and len(items) == 2
    missing = await api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries/{uuid.uuid4()}/resend",
                             headers=auth(team))
    assert missing.status_code == 404 and missing.json()["error"] == "webhook_delivery_not_found"
    other = await make_team(db, name="other")
    hidden = await api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=auth(other))
    assert hidden.status_code == 404 and hidden.json()["error"] == "webhook_endpoint_not_found"


async def test_replay_requeues_failed_deliveries_since_a_time(api, db, settings) -> None:
    settings.webhook_retry_schedule_seconds = [0]
    team = await make_team(db)
    async with Receiver(script=[(500, {}), (500, {})]) as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url)
        await emit(db, team.team_id)
        await emit(db, team.team_id)
        failed = await eventually(settled(api, team, endpoint["id"], "failed"))
        assert len(failed) == 2
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        none = await api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/replay", json={"since": future},
                              headers=auth(team))
        assert none.status_code == 202 and none.json() == {"requeued": 0}
        replayed = await api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/replay",
                                  json={"since": "2020-01-01T00:00:00Z"}, headers=auth(team))
        assert replayed.json() == {"requeued": 2}
        await receiver.wait_for(4)
        items = await eventually(settled(api, team, endpoint["id"], "succeeded"))
    assert all([a["statusCode"] for a in d["log"]] == [500, 204] for d in items)


async def test_rotation_signs_with_both_secrets_during_the_overlap(api, db, settings) -> None:
    team = await make_team(db)
    async with Receiver() as receiver, delivering(db, settings):
        endpoint = await add_endpoint(api, team, receiver.url)
        rotated = await api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=auth(team))
        assert rotated.status_code == 200 and rotated.json()["secret"] != endpoint["secret"]
        assert rotated.json()["previousSecretExpiresAt"]
        await emit(db, team.team_id)
        [request] = await receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], rotated.json()["secret"]):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "job.succeeded"
    with pytest.raises(Exception, match="signature"):
        Webhook(service.new_secret()).verify(request.body, request.headers)


async def test_the_outbox_is_written_in_the_callers_transaction(db) -> None:
    team = await make_team(db)
    async with db.transaction() as session:
        await session.execute(text(
            "INSERT INTO webhook_endpoints (team_id, url, secret) VALUES (:t, 'https://example.com/h', :s)"),
            {"t": team.team_id, "s": service.new_secret()})
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            assert await service.emit(session, team.team_id, "job.succeeded", {"id": "x"}) == 1
            raise RuntimeError("the change that caused the event fails")
    lonely = await make_team(db, name="no endpoints")
    async with db.transaction() as session:
        assert await service.emit(session, lonely.team_id, "job.succeeded", {"id": "y"}) == 0
        counts = (await session.execute(text(
            "SELECT (SELECT count(*) FROM webhook_messages), (SELECT count(*) FROM webhook_deliveries)"))).one()
    assert tuple(counts) == (0, 0)


async def test_endpoints_api_crud_and_validation(api, db, settings) -> None:
    team = await make_team(db)
    created = await add_endpoint(api, team, "https://example.com/a", description="billing", eventTypes=["credits.low_balance"])
    second = await add_endpoint(api, team, "https://example.com/b")
    assert second["eventTypes"] == []
    listed = (await api.get("/api/v1/webhook-endpoints?limit=1", headers=auth(team))).json()
    assert [e["id"] for e in listed["items"]] == [second["id"]] and listed["nextCursor"]
    rest = (await api.get(f"/api/v1/webhook-endpoints?cursor={listed['nextCursor']}", headers=auth(team))).json()
    assert [e["id"] for e in rest["items"]] == [created["id"]] and rest["nextCursor"] is None
    assert all("secret" not in e for e in listed["items"] + rest["items"])
    patched = await api.patch(f"/api/v1/webhook-endpoints/{created['id']}", headers=auth(team),
                              json={"url": "https://example.com/c", "eventTypes": [], "enabled": False})
    assert patched.status_code == 200 and patched.json()["url"] == "https://example.com/c"
    assert patched.json()["enabled"] is False and patched.json()["description"] == "billing"
    unknown = await api.post("/api/v1/webhook-endpoints", json={"url": "https://example.com", "eventTypes": ["job.done"]},
                             headers=auth(team))
    assert unknown.status_code == 422 and unknown.json()["error"] == "invalid_event_type"
    extra = await api.post("/api/v1/webhook-endpoints", json={"url": "https://example.com", "secret": "x"}, headers=auth(team))
    assert extra.status_code == 422
    long = await api.post("/api/v1/webhook-endpoints", json={"url": "https://example.com/" + "a" * 2100}, headers=auth(team))
    assert long.status_code == 422
    deleted = await api.delete(f"/api/v1/webhook-endpoints/{created['id']}", headers=auth(team))
    assert deleted.status_code == 204
    gone = await api.get(f"/api/v1/webhook-endpoints/{created['id']}", headers=auth(team))
    assert gone.status_code == 404 and gone.json()["error"] == "webhook_endpoint_not_found"
    assert (await api.get("/api/v1/webhook-endpoints", headers=auth(team.__class__(**{
        **team.__dict__, "api_key": "pm_wrong"})))).status_code == 401
    # Idempotency-Key: the same key and body replay the first answer (the same secret).
    key = {"Idempotency-Key": str(uuid.uuid4()), **auth(team)}
    first = await api.post("/api/v1/webhook-endpoints", json={"url": "https://example.com/i"}, headers=key)
    again = await api.post("/api/v1/webhook-endpoints", json={"url": "https://example.com/i"}, headers=key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers.get("Idempotent-Replayed") == "true"


async def test_ad_hoc_targets_are_signed_with_the_teams_default_secret(api, db, settings) -> None:
    team = await make_team(db)
    async with db.transaction() as session:
        secret = await service.default_secret(session, team.team_id)
    async with db.transaction() as session:
        assert await service.default_secret(session, team.team_id) == secret  # created once
    prediction = {"id": "abc", "status": "succeeded", "output": ["https://x/y.png"]}
    async with Receiver() as receiver, delivering(db, settings):
        async with db.transaction() as session:
            await service.emit_to_url(session, team.team_id, receiver.url + "/replicate", "prediction.completed", prediction)
        [request] = await receiver.wait_for(1)
    assert json.loads(request.body) == prediction  # the body as given, not an envelope
    assert Webhook(secret).verify(request.body, request.headers) == prediction
    from replicate.webhook import Webhooks, WebhookSigningSecret  # the replicate SDK's own validator accepts it too

    Webhooks.validate(headers=request.headers, body=request.body.decode(), secret=WebhookSigningSecret(key=secret))
