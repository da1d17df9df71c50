"""``Idempotency-Key`` (kit/idempotency.py) through the API: replay, mismatch, concurrency, errors,
crashes on either side of the commit, per-owner scoping, pruning."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from pixelmint.api.deps import idempotent, rate_limit
from pixelmint.credits import apps
from pixelmint.credits import service as credits
from pixelmint.credits.app_endpoints import ConsumeOut, consume, get_app
from pixelmint.jobs import service as jobs_service
from pixelmint.kit.db import Database
from pixelmint.kit.idempotency import Owner, Pruner, _lock_key, prune
from tests.builders import assert_ledger_ok, auth, generate_body, make_team, solid_png

GENERATE = "/api/v1/generate"


def with_key(team: Any, key: str) -> dict[str, str]:
    return {**auth(team), "Idempotency-Key": key}


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.transaction() as session:
        return await session.scalar(text(sql), params)


async def jobs_of(db: Database, team: Any) -> int:
    return await scalar(db, "SELECT count(*) FROM jobs WHERE team_id = :t", t=team.team_id)


async def reservations_of(db: Database, team: Any) -> int:
    return await scalar(db, "SELECT count(*) FROM credit_transactions WHERE team_id = :t AND type = 'reserve'",
                        t=team.team_id)


async def test_same_key_and_body_replay_the_first_answer(api, db) -> None:
    team = await make_team(db, credits="100")
    first = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "gen-1"))
    again = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "gen-1"))
    assert first.status_code == again.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content and again.headers["content-type"] == first.headers["content-type"]
    assert (await jobs_of(db, team), await reservations_of(db, team)) == (1, 1)
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert balance["reservedCredits"] == first.json()["job"]["reservedCredits"]
    await assert_ledger_ok(db)


async def test_the_same_key_with_another_body_or_path_is_409_reused(api, db) -> None:
    team = await make_team(db, credits="100")
    assert (await api.post(GENERATE, json=generate_body(), headers=with_key(team, "k"))).status_code == 202
    other_body = await api.post(GENERATE, json=generate_body(prompt="another"), headers=with_key(team, "k"))
    assert other_body.status_code == 409 and other_body.json()["error"] == "idempotency_key_reused"
    other_path = await api.post(f"/api/v1/models/{uuid.uuid4()}/refine", json={"prompt": "x"}, headers=with_key(team, "k"))
    assert other_path.status_code == 409 and other_path.json()["error"] == "idempotency_key_reused"
    assert await jobs_of(db, team) == 1


async def test_concurrent_duplicates_make_exactly_one_job(api, db) -> None:
    team = await make_team(db, credits="100")
    replies = await asyncio.gather(*[api.post(GENERATE, json=generate_body(), headers=with_key(team, "burst"))
                                     for _ in range(8)])
    assert (await jobs_of(db, team), await reservations_of(db, team)) == (1, 1)
    assert {r.status_code for r in replies} <= {202, 409}
    assert all(r.json()["error"] == "idempotency_key_in_progress" for r in replies if r.status_code == 409)
    accepted = [r for r in replies if r.status_code == 202]
    assert len({r.json()["job"]["id"] for r in accepted}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in accepted) == 1
    retry = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "burst"))
    assert retry.headers["idempotent-replayed"] == "true" and retry.content == accepted[0].content
    await assert_ledger_ok(db)


async def test_concurrent_retries_after_the_first_finished_all_replay(api, db) -> None:
    """Only a first request still running is "in progress": once it has answered, retries that
    overlap each other (each holds the key's lock while it looks the answer up) all get the replay."""
    team = await make_team(db, credits="100")
    first = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "done"))
    assert first.status_code == 202
    retries = await asyncio.gather(*[api.post(GENERATE, json=generate_body(), headers=with_key(team, "done"))
                                     for _ in range(12)])
    # The same interleaving forced: a retry holds the key's lock while another arrives.
    async with db.transaction() as holder:
        await holder.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                             {"k": _lock_key(Owner("team_id", team.team_id), "done")})
        retries.append(await api.post(GENERATE, json=generate_body(), headers=with_key(team, "done")))
    assert [(r.status_code, r.headers.get("idempotent-replayed"), r.content) for r in retries] == \
        [(202, "true", first.content)] * 13
    assert (await jobs_of(db, team), await reservations_of(db, team)) == (1, 1)


async def test_a_402_is_replayed_even_after_credits_arrive(api, db) -> None:
    team = await make_team(db, credits="0")
    first = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "poor"))
    assert first.status_code == 402 and first.json()["error"] == "insufficient_credits"
    async with db.transaction() as session:
        await credits.grant(session, team_id=team.team_id, amount=Decimal("100"), description="top-up")
    again = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "poor"))
    assert again.status_code == 402 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await jobs_of(db, team) == 0
    fresh = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "rich"))
    assert fresh.status_code == 202
    await assert_ledger_ok(db)


async def test_keys_belong_to_their_team(api, db) -> None:
    one, two = await make_team(db, credits="100", name="one"), await make_team(db, credits="100", name="two")
    a = await api.post(GENERATE, json=generate_body(), headers=with_key(one, "shared"))
    b = await api.post(GENERATE, json=generate_body(), headers=with_key(two, "shared"))
    assert a.status_code == b.status_code == 202
    assert "idempotent-replayed" not in b.headers and a.json()["job"]["id"] != b.json()["job"]["id"]


async def test_validation_errors_and_429_leave_the_key_unused(client_with, db) -> None:
    async with client_with(max_queued_jobs_per_team=1) as api:
        team = await make_team(db, credits="100")
        queued = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "a"))
        assert queued.status_code == 202
        invalid = await api.post(GENERATE, json={"prompt": 3}, headers=with_key(team, "b"))
        assert invalid.status_code == 422 and invalid.json()["error"] == "invalid_request"
        full = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "b"))
        assert full.status_code == 429 and full.json()["error"] == "queue_full"
        assert await scalar(db, "SELECT count(*) FROM idempotency_keys WHERE key = 'b'") == 0
        assert (await api.delete(f"{GENERATE}/{queued.json()['job']['id']}", headers=auth(team))).status_code == 200
        retry = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "b"))
        assert retry.status_code == 202 and "idempotent-replayed" not in retry.headers


async def test_a_crash_before_the_commit_leaves_the_key_unused(api, db, monkeypatch) -> None:
    team = await make_team(db, credits="100")
    real = jobs_service.submit_generation

    async def reserve_then_crash(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)  # the reservation and the job are written, not committed
        raise RuntimeError("the process dies before the commit")

    monkeypatch.setattr(jobs_service, "submit_generation", reserve_then_crash)
    crashed = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "crash"))
    assert crashed.status_code == 500 and crashed.json()["error"] == "internal_error"  # api/errors.EdgeMiddleware
    monkeypatch.undo()
    assert await scalar(db, "SELECT count(*) FROM idempotency_keys") == 0
    retry = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "crash"))
    assert retry.status_code == 202 and "idempotent-replayed" not in retry.headers
    assert (await jobs_of(db, team), await reservations_of(db, team)) == (1, 1)
    await assert_ledger_ok(db)


async def test_a_crash_after_the_commit_replays_the_committed_answer(api, db, monkeypatch) -> None:
    team = await make_team(db, credits="100")

    def explode() -> None:
        raise RuntimeError("the process dies after the commit")

    monkeypatch.setattr(api.app.state.runtime.events, "announce_jobs_available", explode)
    crashed = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "late"))
    assert crashed.status_code == 500 and crashed.json()["error"] == "internal_error"  # api/errors.EdgeMiddleware
    monkeypatch.undo()
    retry = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "late"))
    assert retry.status_code == 202 and retry.headers["idempotent-replayed"] == "true"
    job_id = await scalar(db, "SELECT id FROM jobs WHERE team_id = :t", t=team.team_id)
    assert retry.json()["job"]["id"] == str(job_id)
    assert (await jobs_of(db, team), await reservations_of(db, team)) == (1, 1)


async def test_a_retry_while_the_first_waits_for_its_result_is_in_progress(api, db) -> None:
    team = await make_team(db, credits="100")
    events = api.app.state.runtime.events
    events.jobs_available.clear()
    body = generate_body(waitForResult=True)
    first = asyncio.create_task(api.post(GENERATE, json=body, headers=with_key(team, "wait")))
    await asyncio.wait_for(events.jobs_available.wait(), 30)  # committed; now waiting (no worker here)
    busy = await api.post(GENERATE, json=body, headers=with_key(team, "wait"))
    assert busy.status_code == 409 and busy.json()["error"] == "idempotency_key_in_progress"
    job_id = await scalar(db, "SELECT id FROM jobs WHERE team_id = :t", t=team.team_id)
    assert (await api.delete(f"{GENERATE}/{job_id}", headers=auth(team))).status_code == 200
    done = await asyncio.wait_for(first, 30)
    assert done.status_code == 200 and done.json()["job"]["status"] == "canceled"
    replay = await api.post(GENERATE, json=body, headers=with_key(team, "wait"))
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == done.content


async def test_a_first_request_that_died_after_committing(api, db) -> None:
    """The first request committed and died before its final answer (simulated on the row)."""
    team = await make_team(db, credits="100")
    first = await api.post(GENERATE, json=generate_body(waitForResult=True), headers=with_key(team, "d"))

    async def retry() -> Any:
        return await api.post(GENERATE, json=generate_body(waitForResult=True), headers=with_key(team, "d"))

    async def update(sql: str) -> None:
        async with db.transaction() as session:
            await session.execute(text(f"UPDATE idempotency_keys SET {sql} WHERE key = 'd'"))

    # A provisional answer (the queued job) that was never made final: in progress while it is
    # recent, then replayed.
    await update("completed_at = NULL, status_code = 202")
    assert (await retry()).json()["error"] == "idempotency_key_in_progress"
    await update("created_at = now() - interval '1 hour'")
    stale = await retry()
    assert stale.status_code == 202 and stale.headers["idempotent-replayed"] == "true"
    assert stale.json()["job"]["id"] == first.json()["job"]["id"]
    # No answer at all: applied, answer lost; never run twice.
    await update("status_code = NULL, response_body = NULL")
    lost = await retry()
    assert lost.status_code == 409 and lost.json()["error"] == "idempotency_key_unresolved"
    assert await jobs_of(db, team) == 1


async def test_a_multipart_upload_retried_with_a_new_boundary_replays(api, db) -> None:
    team = await make_team(db, credits="500")
    files = [("trainingImages", (f"{i}.png", solid_png((200, 40 * i, 40)), "image/png")) for i in range(3)]
    form = {"referenceModelId": "business-headshot", "name": "mine"}
    first = await api.post("/api/v1/models", data=form, files=files, headers=with_key(team, "upload"))
    again = await api.post("/api/v1/models", data=form, files=files, headers=with_key(team, "upload"))
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["model"]["id"] == first.json()["model"]["id"]
    other = await api.post("/api/v1/models", data={**form, "name": "other"}, files=files, headers=with_key(team, "upload"))
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    assert await scalar(db, "SELECT count(*) FROM custom_models WHERE team_id = :t", t=team.team_id) == 1


async def test_a_bad_key_is_422(api, db) -> None:
    team = await make_team(db, credits="100")
    for key in ("has space", "x" * 256):
        reply = await api.post(GENERATE, json=generate_body(), headers=with_key(team, key))
        assert reply.status_code == 422, key
    assert await jobs_of(db, team) == 0


async def test_credit_api_apps_add_it_with_one_line_and_own_their_keys(api, db) -> None:
    """``dependencies=[idempotent(get_app)]`` on the credit API's consume: keys are per app."""
    api.app.router.add_api_route(  # type: ignore[attr-defined]
        "/test/consume", consume, methods=["POST"], response_model=ConsumeOut,
        dependencies=[rate_limit("consume", get_app), idempotent(get_app)],
    )
    team = await make_team(db, credits="100")
    async with db.transaction() as session:
        one = await apps.register_app(session, name="one", operations={"deck": Decimal("10")})
        two = await apps.register_app(session, name="two", operations={"deck": Decimal("10")})
        for app in (one, two):
            await apps.authorize_app(session, team_id=team.team_id, app_id=app.app_id, granted_by="admin")
    body = {"teamId": str(team.team_id), "operation": "deck"}

    async def charge(app: apps.RegisteredApp) -> Any:
        return await api.post("/test/consume", json=body,
                              headers={"Authorization": f"Bearer {app.service_key}", "Idempotency-Key": "deck-1"})

    first, replay, other_app = await charge(one), await charge(one), await charge(two)
    assert first.status_code == replay.status_code == other_app.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
    assert "idempotent-replayed" not in other_app.headers
    consumed = await scalar(db, "SELECT count(*) FROM credit_transactions WHERE team_id = :t AND type = 'consume'",
                            t=team.team_id)
    assert consumed == 2
    owners = await scalar(db, "SELECT count(*) FROM idempotency_keys WHERE app_id IS NOT NULL AND team_id IS NULL")
    assert owners == 2
    await assert_ledger_ok(db)


async def test_keys_older_than_the_retention_are_pruned(api, db) -> None:
    team = await make_team(db, credits="100")
    for key in ("old", "older", "new"):
        assert (await api.post(GENERATE, json=generate_body(), headers=with_key(team, key))).status_code == 202
    async with db.transaction() as session:
        await session.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
                                   "WHERE key IN ('old', 'older')"))
    async with db.transaction() as session:
        assert await prune(session, retention=dt.timedelta(hours=24), batch_size=1) == 1
    assert await Pruner(db, retention=dt.timedelta(hours=24), interval_seconds=3600).run_once() == 1
    assert await scalar(db, "SELECT array_agg(key) FROM idempotency_keys") == ["new"]
    reused = await api.post(GENERATE, json=generate_body(), headers=with_key(team, "old"))
    assert reused.status_code == 202 and "idempotent-replayed" not in reused.headers
    assert await jobs_of(db, team) == 4
