"""App grants: an app uses a team's credits only with the team's grant (given by the team or an
admin); every credit-API call about a team without one is 403 ``app_not_authorized``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from pixelmint.credits import apps
from pixelmint.kit.db import Database, alembic_config, migrate
from tests.builders import assert_ledger_ok, auth, make_app, make_team

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def deck_app(db) -> apps.RegisteredApp:  # type: ignore[no-untyped-def]
    return await make_app(db)


def service(app: apps.RegisteredApp) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.service_key}"}


async def every_call(api, app: apps.RegisteredApp, team_id: Any, hold_id: Any) -> dict[str, tuple[int, str]]:  # type: ignore[no-untyped-def]
    """(status, error code) of each credit-API call the app makes about the team (and a hold)."""
    body = {"teamId": str(team_id), "operation": "deck"}
    replies = {
        "validate": await api.post("/api/v1/credits/validate", json=body, headers=service(app)),
        "consume": await api.post("/api/v1/credits/consume", json=body, headers=service(app)),
        "reserve": await api.post("/api/v1/credits/reserve", json=body, headers=service(app)),
        "capture": await api.post("/api/v1/credits/capture", json={"holdId": str(hold_id)}, headers=service(app)),
        "release": await api.post("/api/v1/credits/release", json={"holdId": str(hold_id)}, headers=service(app)),
        "usage": await api.get("/api/v1/credits/usage", params={"teamId": str(team_id)}, headers=service(app)),
        "team-balance": await api.get("/api/v1/credits/team-balance", params={"teamId": str(team_id)},
                                      headers=service(app)),
    }
    return {name: (r.status_code, r.json().get("error", "")) for name, r in replies.items()}


async def ledger_rows(db: Database) -> int:
    async with db.transaction() as s:
        return await s.scalar(text("SELECT count(*) FROM credit_transactions"))


async def test_without_a_grant_every_call_is_403_and_writes_nothing(api, db, deck_app) -> None:
    team = await make_team(db, credits="100")
    other = await make_team(db, credits="100", name="other")
    async with db.transaction() as s:
        await apps.authorize_app(s, team_id=other.team_id, app_id=deck_app.app_id, granted_by="admin")
        hold = await apps.hold(s, apps.AppPrincipal(deck_app.app_id, "flashcards"), team_id=other.team_id,
                               operation="deck", amount=None, ttl_seconds=60, max_ttl_seconds=60, fail_open=False)
        await apps.revoke_app(s, team_id=other.team_id, app_id=deck_app.app_id)  # releases the hold
    before = await ledger_rows(db)
    refused = dict.fromkeys(("validate", "consume", "reserve", "capture", "release", "usage", "team-balance"), (403, "app_not_authorized"))
    assert await every_call(api, deck_app, team.team_id, hold.id) == refused
    assert await every_call(api, deck_app, other.team_id, hold.id) == refused  # granted once, then revoked
    assert await every_call(api, deck_app, uuid.uuid4(), hold.id) == refused  # no team: no probing team ids
    assert await ledger_rows(db) == before
    await assert_ledger_ok(db)


async def test_a_team_grants_lists_and_revokes_an_app(api, db, deck_app) -> None:
    team = await make_team(db, credits="100")
    unknown = await api.put(f"/api/v1/credits/apps/{uuid.uuid4()}", headers=auth(team))
    assert unknown.status_code == 404 and unknown.json()["error"] == "app_not_found"

    granted = await api.put(f"/api/v1/credits/apps/{deck_app.app_id}", headers=auth(team))
    assert granted.status_code == 200, granted.text
    assert {k: granted.json()[k] for k in ("appId", "appName", "teamId", "grantedBy")} == {
        "appId": str(deck_app.app_id), "appName": "flashcards", "teamId": str(team.team_id), "grantedBy": "team"}
    again = await api.put(f"/api/v1/credits/apps/{deck_app.app_id}", headers=auth(team))
    assert again.json() == granted.json()  # idempotent
    assert (await api.get("/api/v1/credits/apps", headers=auth(team))).json()["items"] == [granted.json()]

    held = (await api.post("/api/v1/credits/reserve", json={"teamId": str(team.team_id), "operation": "deck"},
                           headers=service(deck_app))).json()
    assert held["status"] == "held"
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).json()["availableCredits"] == 90.0
    allowed = await every_call(api, deck_app, team.team_id, uuid.uuid4())
    assert {name: status for name, (status, _) in allowed.items()} == {
        "validate": 200, "consume": 200, "reserve": 201, "capture": 404, "release": 404, "usage": 200,
        "team-balance": 200}

    revoked = await api.delete(f"/api/v1/credits/apps/{deck_app.app_id}", headers=auth(team))
    assert revoked.status_code == 204
    assert (await api.get("/api/v1/credits/apps", headers=auth(team))).json()["items"] == []
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert (balance["availableCredits"], balance["reservedCredits"]) == (90.0, 0.0)  # both holds released
    capture = await api.post("/api/v1/credits/capture", json={"holdId": held["holdId"]}, headers=service(deck_app))
    assert capture.status_code == 403 and capture.json()["error"] == "app_not_authorized"
    assert (await api.delete(f"/api/v1/credits/apps/{deck_app.app_id}", headers=auth(team))).status_code == 204
    await assert_ledger_ok(db)


async def test_a_grant_is_per_team_and_per_app(api, db, deck_app) -> None:
    alice, bob = await make_team(db, credits="100", name="alice"), await make_team(db, credits="100", name="bob")
    other_app = await make_app(db, name="other")
    assert (await api.put(f"/api/v1/credits/apps/{deck_app.app_id}", headers=auth(alice))).status_code == 200
    body = {"operation": "deck"}
    assert (await api.post("/api/v1/credits/consume", json={**body, "teamId": str(alice.team_id)},
                           headers=service(deck_app))).status_code == 200
    for app, team in ((deck_app, bob), (other_app, alice)):
        reply = await api.post("/api/v1/credits/consume", json={**body, "teamId": str(team.team_id)},
                               headers=service(app))
        assert reply.status_code == 403 and reply.json()["error"] == "app_not_authorized"
    hold = (await api.post("/api/v1/credits/reserve", json={**body, "teamId": str(alice.team_id)},
                           headers=service(deck_app))).json()
    stolen = await api.post("/api/v1/credits/capture", json={"holdId": hold["holdId"]}, headers=service(other_app))
    assert stolen.status_code == 404 and stolen.json()["error"] == "hold_not_found"  # holds stay the app's own


async def test_admins_grant_and_revoke_through_the_api(api, db, settings, deck_app) -> None:
    settings.admin_token = "admin-secret"
    team = await make_team(db, credits="100")
    url = f"/api/v1/admin/apps/{deck_app.app_id}/teams"
    for path, code in ((f"/api/v1/admin/apps/{uuid.uuid4()}/teams/{team.team_id}", "app_not_found"),
                       (f"{url}/{uuid.uuid4()}", "team_not_found")):
        missing = await api.put(path, headers=ADMIN)
        assert missing.status_code == 404 and missing.json()["error"] == code
    assert (await api.put(f"{url}/{team.team_id}", headers=auth(team))).status_code == 401  # a team key is no admin

    granted = await api.put(f"{url}/{team.team_id}", headers=ADMIN)
    assert granted.status_code == 200 and granted.json()["grantedBy"] == "admin"
    assert [g["teamId"] for g in (await api.get(url, headers=ADMIN)).json()["items"]] == [str(team.team_id)]
    assert (await api.get("/api/v1/credits/apps", headers=auth(team))).json()["items"] == [granted.json()]
    validate = await api.post("/api/v1/credits/validate", json={"teamId": str(team.team_id), "operation": "deck"},
                              headers=service(deck_app))
    assert validate.status_code == 200

    assert (await api.delete(f"{url}/{team.team_id}", headers=ADMIN)).status_code == 204
    assert (await api.get(url, headers=ADMIN)).json()["items"] == []

    created = await api.post("/api/v1/admin/apps", headers=ADMIN,
                             json={"name": "slides", "operations": {"slide": 1}, "teamIds": [str(team.team_id)]})
    assert created.status_code == 201, created.text
    slides = created.json()["serviceKey"]
    consume = await api.post("/api/v1/credits/consume", json={"teamId": str(team.team_id), "operation": "slide"},
                             headers={"Authorization": f"Bearer {slides}"})
    assert consume.status_code == 200, consume.text
    await assert_ledger_ok(db)


async def test_the_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    async def tables() -> set[str]:
        db = Database.connect(database_url, pool_size=1)
        try:
            async with db.transaction() as s:
                return set(await s.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
        finally:
            await db.dispose()

    assert "app_grants" in await tables()
    # Alembic runs its async env in its own event loop: off this one.
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "base")
    assert await tables() == {"alembic_version"}
    await asyncio.to_thread(migrate, database_url, "heads")
    assert "app_grants" in await tables()


@pytest.mark.slow
async def test_the_cli_grants_at_registration_and_revokes(db, database_url: str) -> None:
    alice, bob = await make_team(db, credits="100", name="alice"), await make_team(db, credits="100", name="bob")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMINT_") and k != "DATABASE_URL"}
        return subprocess.run([sys.executable, "-m", "pixelmint.cli", "admin", *args],
                              env={**env, "DATABASE_URL": database_url}, capture_output=True, text=True, timeout=60)

    created = await asyncio.to_thread(cli, "create-app", "flashcards", "--operation", "deck=10",
                                      "--team", str(alice.team_id), "--json")
    assert created.returncode == 0, created.stderr
    app_id = uuid.UUID(json.loads(created.stdout)["appId"])

    async def granted() -> list[str]:
        async with db.transaction() as s:
            return [g.team_id.hex for g in await apps.grants(s, app_id=app_id)]

    assert await granted() == [alice.team_id.hex]
    added = await asyncio.to_thread(cli, "authorize-app", str(app_id), str(bob.team_id))
    assert added.returncode == 0 and "authorized" in added.stdout, added.stderr
    assert sorted(await granted()) == sorted([alice.team_id.hex, bob.team_id.hex])
    revoked = await asyncio.to_thread(cli, "authorize-app", str(app_id), str(alice.team_id), str(bob.team_id),
                                      "--revoke")
    assert revoked.returncode == 0 and revoked.stdout.count("revoked") == 2, revoked.stderr
    assert await granted() == []
    unknown = await asyncio.to_thread(cli, "authorize-app", str(uuid.uuid4()), str(alice.team_id))
    assert unknown.returncode == 1 and "error app_not_found" in unknown.stderr
