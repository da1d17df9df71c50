"""Client mistakes get a 4xx with a stable code, never a 500 (found by review, kept as guards).
Each test builds its own team on the module's one app and database (``shared_api``, ``shared_db``)."""

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
