"""Admin edits of the catalog are validated before anything is saved: an explicit null, an
overflowing number or a malformed decimal is 422 and the catalog keeps answering every team."""

from __future__ import annotations

import pytest

from tests.builders import auth, make_team

ADMIN = {"Authorization": "Bearer admin-secret"}
MODEL = "/api/v1/admin/reference-models/fitness-yoga"

BAD_PATCHES = [
    *({field: None} for field in ("name", "category", "description", "complexityFactor", "popularity",
                                   "characteristics", "provider", "providerModels", "isActive")),
    {"complexityFactor": 1e9}, {"complexityFactor": 0.001}, {"complexityFactor": "NaN"}, {"complexityFactor": 11},
    {"popularity": 2**31}, {"popularity": -1}, {"provider": "p" * 51}, {"providerModels": {"fal": "m" * 201}},
    {"nmae": "typo"},
]


@pytest.fixture
async def catalog(api, db, settings):  # type: ignore[no-untyped-def]
    settings.admin_token = "admin-secret"
    team = await make_team(db)
    before = await api.get("/api/v1/reference-models/fitness-yoga", headers=auth(team))
    assert before.status_code == 200
    return auth(team), before.json()


@pytest.mark.parametrize("patch", BAD_PATCHES, ids=[str(p)[:40] for p in BAD_PATCHES])
async def test_a_bad_patch_is_422_and_saves_nothing(api, catalog, patch) -> None:
    team, before = catalog
    response = await api.patch(MODEL, json=patch, headers=ADMIN)
    assert response.status_code == 422 and response.json()["error"] == "invalid_request", response.text
    assert (await api.get("/api/v1/reference-models/fitness-yoga", headers=team)).json() == before
    assert (await api.get("/api/v1/reference-models", headers=team)).status_code == 200


@pytest.mark.parametrize("body", [{"popularity": 2**31}, {"complexityFactor": 1e9}, {"provider": "p" * 51},
                                  {"characteristics": None}, {"complexityFactor": 0.005}])
async def test_a_bad_new_model_is_422_and_saves_nothing(api, catalog, body) -> None:
    team, _ = catalog
    new = {"id": "fashion-noir", "name": "Noir", "category": "fashion", "complexityFactor": 1.0, **body}
    response = await api.post("/api/v1/admin/reference-models", json=new, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert (await api.get("/api/v1/reference-models/fashion-noir", headers=team)).status_code == 404
    assert (await api.get("/api/v1/reference-models", headers=team)).status_code == 200


async def test_a_good_patch_still_works(api, catalog) -> None:
    team, _ = catalog
    response = await api.patch(MODEL, json={"popularity": 2**31 - 1, "complexityFactor": "1.25",
                                            "characteristics": {"mood": "calm"}}, headers=ADMIN)
    assert response.status_code == 200, response.text
    after = (await api.get("/api/v1/reference-models/fitness-yoga", headers=team)).json()
    assert (after["popularity"], after["complexityFactor"], after["characteristics"]) == (2**31 - 1, 1.25, {"mood": "calm"})
    assert (await api.get("/api/v1/reference-models?sort=popularity", headers=team)).json()["items"][0]["id"] == "fitness-yoga"
