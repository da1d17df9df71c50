"""Client mistakes get a 4xx with a stable code, never a 500 (found by review, kept as guards).
The refusals that change nothing share the module's one app and database (``shared_api``,
``shared_db``), each with its own team."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest

from tests.builders import auth, make_team


def cursor(values) -> str:  # type: ignore[no-untyped-def]
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/images", "/api/v1/models", "/api/v1/credits/history",
                                  "/api/v1/reference-models", "/api/v1/reference-models?sort=name"])
@pytest.mark.parametrize("values", [[], [1, 2, 3], [["x"], "y"], ["2024-01-01T00:00:00", 5], [None], {"a": 1}])
async def test_mangled_cursors_are_422(shared_api, shared_db, path, values) -> None:
    team = await make_team(shared_db)
    sep = "&" if "?" in path else "?"
    response = await shared_api.get(f"{path}{sep}cursor={cursor(values)}", headers=auth(team))
    assert response.status_code == 422 and response.json()["error"] == "invalid_cursor", response.text


async def test_estimate_rejects_absurd_inputs(shared_api, shared_db) -> None:
    team = await make_team(shared_db, plan="pro")
    for body in ({"operation": "model_refinement", "referenceModelId": "fitness-yoga", "iteration": 10**9},
                 {"operation": "model_creation", "referenceModelId": "fitness-yoga", "trainingImages": 10**6}):
        response = await shared_api.post("/api/v1/credits/estimate", json=body, headers=auth(team))
        assert response.status_code == 422, response.text


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


async def test_image_bomb_training_upload_is_422(shared_api, shared_db) -> None:
    team = await make_team(shared_db, plan="pro", credits="500")
    response = await shared_api.post("/api/v1/models", data={"referenceModelId": "fitness-yoga", "name": "x"},
                                     files=[("trainingImages", ("bomb.png", png_claiming(60000, 60000), "image/png"))],
                                     headers=auth(team))
    assert response.status_code == 422 and response.json()["error"] == "image_too_large"


async def test_malformed_model_body_does_not_use_up_the_idempotency_key(shared_api, shared_db) -> None:
    team = await make_team(shared_db, plan="pro", credits="500")
    headers = {**auth(team), "Idempotency-Key": "model-1", "content-type": "application/json"}
    bad = await shared_api.post("/api/v1/models", content=b"{not json", headers=headers)
    assert bad.status_code == 422
    good = await shared_api.post("/api/v1/models", headers=headers, content=json.dumps(
        {"referenceModelId": "fitness-yoga", "name": "x", "trainingImageUrls": []}).encode())
    assert good.status_code == 422 and good.json()["error"] == "invalid_training_images"
    assert good.headers.get("Idempotent-Replayed") is None


@pytest.mark.parametrize(("path", "values"), [
    ("/api/v1/credits/history", [2**63]), ("/api/v1/credits/history", [-(2**63) - 1]),
    ("/api/v1/credits/history.csv", [2**70]), ("/api/v1/reference-models", [2**31, "x"]),
    ("/api/v1/jobs", ["0001-01-01T00:00:00+14:00", "00000000-0000-4000-8000-000000000000"]),
])
async def test_cursor_values_beyond_their_column_are_422(shared_api, shared_db, path, values) -> None:
    team = await make_team(shared_db)
    response = await shared_api.get(f"{path}?cursor={cursor(values)}", headers=auth(team))
    assert response.status_code == 422 and response.json()["error"] == "invalid_cursor", response.text


@pytest.mark.parametrize("query", ["from=0001-01-01T00:00:00%2B14:00", "to=9999-12-31T23:59:00-14:00"])
@pytest.mark.parametrize("path", ["/api/v1/credits/history", "/api/v1/credits/history.csv", "/api/v1/credits/usage",
                                  "/api/v1/jobs"])
async def test_instants_outside_postgresql_range_are_422(shared_api, shared_db, path, query) -> None:
    team = await make_team(shared_db)
    query = query.replace("from=", "createdAfter=").replace("to=", "createdBefore=") if path == "/api/v1/jobs" else query
    response = await shared_api.get(f"{path}?{query}", headers=auth(team))
    assert response.status_code == 422 and response.json()["error"] == "invalid_request", response.text


async def test_csv_export_fails_before_its_headers_are_sent(api, db, monkeypatch) -> None:
    from pixelmint.credits import history

    team = await make_team(db, credits="10")

    async def failing(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("the ledger query fails")

    monkeypatch.setattr(history, "list_transactions", failing)
    response = await api.get("/api/v1/credits/history.csv", headers=auth(team))
    assert response.status_code == 500 and response.json()["error"] == "internal_error"


async def test_misspelled_fields_are_422_not_ignored(api, db) -> None:
    team = await make_team(db, plan="pro", credits="100")
    response = await api.post("/api/v1/generate", headers=auth(team), json={
        "referenceModelId": "business-headshot", "prompt": "a cat", "numImage": 4})
    assert response.status_code == 422 and response.json()["field"] == "numImage", response.text
    assert (await api.get("/api/v1/jobs", headers=auth(team))).json()["items"] == []
    both = {"referenceModelId": "business-headshot", "prompt": "a cat", "num_images": 2, "resolution": "512x512"}
    assert (await api.post("/api/v1/generate", headers=auth(team), json=both)).status_code == 202  # by name too


@pytest.mark.parametrize("costs", [{"deck": 1e15}, {"deck": "NaN"}, {"deck": "Infinity"}, {"deck": 1.005},
                                   {"deck": -1}, {"d" * 65: 1}, {"deck": None}])
async def test_bad_app_operation_costs_are_422_and_save_nothing(api, db, settings, costs) -> None:
    settings.admin_token = "admin-secret"
    admin = {"Authorization": "Bearer admin-secret"}
    created = await api.post("/api/v1/admin/apps", json={"name": "decks", "operations": {"deck": 5}}, headers=admin)
    assert created.status_code == 201
    app_id, key = created.json()["appId"], created.json()["serviceKey"]
    response = await api.put(f"/api/v1/admin/apps/{app_id}/operations", json=costs, headers=admin)
    assert response.status_code == 422, response.text
    again = await api.post("/api/v1/admin/apps", json={"name": "other", "operations": costs}, headers=admin)
    assert again.status_code == 422, again.text
    team = await make_team(db, credits="10")
    granted = await api.put(f"/api/v1/admin/apps/{app_id}/teams/{team.team_id}", headers=admin)
    assert granted.status_code == 200, granted.text
    check = await api.post("/api/v1/credits/validate", json={"teamId": str(team.team_id), "operation": "deck"},
                           headers={"Authorization": f"Bearer {key}"})
    assert check.json()["requiredCredits"] == 5.0


async def test_operation_costs_of_an_unknown_app_are_404(api, settings) -> None:
    settings.admin_token = "admin-secret"
    response = await api.put("/api/v1/admin/apps/00000000-0000-4000-8000-000000000000/operations",
                             json={"deck": 1}, headers={"Authorization": "Bearer admin-secret"})
    assert response.status_code == 404 and response.json()["error"] == "app_not_found", response.text


async def test_a_grant_past_what_a_balance_stores_is_422_and_changes_nothing(api, db, settings) -> None:
    settings.admin_token = "admin-secret"
    team = await make_team(db, credits="0")
    url, admin = f"/api/v1/admin/teams/{team.team_id}/credits/grant", {"Authorization": "Bearer admin-secret"}
    full = await api.post(url, headers=admin, json={"amount": 999999999999.99, "bucket": "bonus", "reason": "r"})
    assert full.status_code == 200, full.text
    response = await api.post(url, headers=admin, json={"amount": 1, "bucket": "bonus", "reason": "one more"})
    assert response.status_code == 422 and response.json()["error"] == "value_out_of_range", response.text
    balance = (await api.get("/api/v1/credits/balance", headers=auth(team))).json()
    assert balance["bonusCredits"] == 999999999999.99
