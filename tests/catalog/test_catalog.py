"""The reference-model catalog: data, search, sorting, pagination, previews, admin upkeep."""

from __future__ import annotations

import io

from PIL import Image

from pixelmint.catalog.service import CATEGORIES, load_seed_data, seed_previews
from tests.builders import auth, generate_body, make_team

ADMIN = {"Authorization": "Bearer admin-secret"}


def test_seed_data_has_50_to_100_models_in_every_category() -> None:
    models = load_seed_data()
    assert 50 <= len(models) <= 100
    assert {m["category"] for m in models} == set(CATEGORIES)
    for m in models:
        assert m["complexityFactor"] > 0 and m["characteristics"]["style"] and m["providerModels"]


async def test_search_sort_filter_and_paginate(api, db) -> None:
    team = await make_team(db)
    seen, cursor = [], None
    while True:
        page = (await api.get("/api/v1/reference-models", params={"limit": 25, **({"cursor": cursor} if cursor else {})},
                              headers=auth(team))).json()
        seen += page["items"]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert len(seen) == len(load_seed_data()) == len({m["id"] for m in seen})
    popularity = [m["popularity"] for m in seen]
    assert popularity == sorted(popularity, reverse=True)

    by_name = (await api.get("/api/v1/reference-models?sort=name&limit=100", headers=auth(team))).json()["items"]
    assert [m["name"] for m in by_name] == sorted(m["name"] for m in by_name)
    fitness = (await api.get("/api/v1/reference-models?category=fitness&limit=100", headers=auth(team))).json()["items"]
    assert fitness and {m["category"] for m in fitness} == {"fitness"}
    found = (await api.get("/api/v1/reference-models?q=yoga", headers=auth(team))).json()["items"]
    assert [m["id"] for m in found] == ["fitness-yoga"]
    by_setting = (await api.get("/api/v1/reference-models?q=boardroom", headers=auth(team))).json()["items"]
    assert [m["id"] for m in by_setting] == ["business-boardroom-meeting"]
    assert (await api.get("/api/v1/reference-models?category=cars", headers=auth(team))).status_code == 422


async def test_previews_are_rendered_once_and_served(api, db) -> None:
    team = await make_team(db)
    runtime = api.app.state.runtime  # type: ignore[attr-defined]
    async with db.transaction() as session:
        assert await seed_previews(session, runtime.storage) == len(load_seed_data())
    async with db.transaction() as session:
        assert await seed_previews(session, runtime.storage) == 0
    model = (await api.get("/api/v1/reference-models/beauty-closeup", headers=auth(team))).json()
    assert len(model["previewImages"]) == 2
    png = await api.get(model["previewImages"][0]["url"])
    assert Image.open(io.BytesIO(png.content)).size == (256, 256)


async def test_admin_create_update_deactivate(api, db, settings) -> None:
    team = await make_team(db, plan="basic")
    body = {"id": "fashion-noir", "name": "Noir", "category": "fashion", "complexityFactor": 2.0,
            "characteristics": {"style": "noir"}}
    assert (await api.post("/api/v1/admin/reference-models", json=body, headers=ADMIN)).json()["error"] == "admin_disabled"
    settings.admin_token = "admin-secret"
    assert (await api.post("/api/v1/admin/reference-models", json=body, headers=auth(team))).status_code == 401
    created = await api.post("/api/v1/admin/reference-models", json=body, headers=ADMIN)
    assert created.status_code == 201 and len(created.json()["previewImages"]) == 2
    assert (await api.post("/api/v1/admin/reference-models", json=body, headers=ADMIN)).json()["error"] == "model_exists"
    # 5 × 1.0 × 1.0 × 2.0 × 1.2 = 12.00
    job = (await api.post("/api/v1/generate", json=generate_body(referenceModelId="fashion-noir"), headers=auth(team))).json()
    assert job["job"]["estimatedCredits"] == 12.0

    patched = await api.patch("/api/v1/admin/reference-models/fashion-noir", json={"complexityFactor": 1.0}, headers=ADMIN)
    assert patched.json()["complexityFactor"] == 1.0
    job = (await api.post("/api/v1/generate", json=generate_body(referenceModelId="fashion-noir"), headers=auth(team))).json()
    assert job["job"]["estimatedCredits"] == 6.0

    assert (await api.delete("/api/v1/admin/reference-models/fashion-noir", headers=ADMIN)).json()["isActive"] is False
    assert (await api.get("/api/v1/reference-models/fashion-noir", headers=auth(team))).status_code == 404
    gone = await api.post("/api/v1/generate", json=generate_body(referenceModelId="fashion-noir"), headers=auth(team))
    assert gone.status_code == 404 and gone.json()["error"] == "model_not_found"
    bad = await api.post("/api/v1/admin/reference-models", json={**body, "id": "Bad Id!"}, headers=ADMIN)
    assert bad.status_code == 422
