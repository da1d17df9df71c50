"""``POST /api/v1/models`` as JSON takes training-image URLs in ``trainingImages`` (the seed
contract's shape) or in ``trainingImageUrls`` (the earlier name, kept as an alias)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Response

from tests.builders import auth, make_team, solid_png
from tests.providers.localserver import LocalServer


@pytest.fixture
def image_server(settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    images = FastAPI()

    @images.get("/{name}.png")
    async def image(name: str) -> Response:
        return Response(solid_png((200, 30, 30)), media_type="image/png")

    settings.allow_private_image_urls = True  # the images come from 127.0.0.1
    with LocalServer(images) as server:
        yield server.url


@pytest.mark.parametrize("key", ["trainingImages", "trainingImageUrls"])
async def test_training_image_urls_under_either_name(api, db, image_server: str, key: str) -> None:
    team = await make_team(db, plan="pro", credits="500")
    body = {"referenceModelId": "lifestyle-home", "name": "Red", key: [f"{image_server}/a.png", f"{image_server}/b.png"]}
    created = await api.post("/api/v1/models", json=body, headers=auth(team))
    assert created.status_code == 202, created.text
    assert created.json()["model"]["trainingImageCount"] == 2


async def test_the_schema_documents_the_seed_shape(api) -> None:
    schema = (await api.get("/openapi.json")).json()
    body = schema["paths"]["/api/v1/models"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "trainingImages" in body["properties"]
