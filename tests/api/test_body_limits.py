"""Request bodies are capped before anything parses them: 413 ``payload_too_large`` for a declared
``Content-Length`` over the cap and for a chunked body as soon as it passes the cap."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image
from sqlalchemy import text

from tests.builders import auth, make_team, solid_png

CHUNK = 64 * 1024


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    settings.max_body_bytes = 256 * 1024
    settings.max_upload_bytes = 512 * 1024
    return settings


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length (sent chunked)."""
    for start in range(0, len(data), CHUNK):
        yield data[start:start + CHUNK]


def assert_too_large(reply) -> None:  # type: ignore[no-untyped-def]
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"] == "payload_too_large" and "bytes" in reply.json()["message"]


async def nothing_saved(db, settings) -> bool:  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        rows = await session.scalar(text("SELECT count(*) FROM custom_models")) + await session.scalar(text("SELECT count(*) FROM jobs"))
    return rows == 0 and not any(p.is_file() for p in settings.storage_dir.rglob("*"))


async def test_a_declared_oversize_json_body_is_refused_before_authentication(api) -> None:
    body = b'{"prompt": "' + b"x" * 300 * 1024 + b'"}'
    reply = await api.post("/api/v1/generate", content=body, headers={"Content-Type": "application/json"})
    assert_too_large(reply)


async def test_a_chunked_oversize_json_body_is_refused_while_streaming(api, db, settings) -> None:
    team = await make_team(db, plan="pro", credits="500")
    body = b'{"referenceModelId": "fitness-yoga", "name": "' + b"x" * 300 * 1024 + b'", "trainingImageUrls": []}'
    reply = await api.post("/api/v1/models", content=chunks(body),
                           headers={**auth(team), "Content-Type": "application/json"})
    assert "content-length" not in reply.request.headers
    assert_too_large(reply)
    assert await nothing_saved(db, settings)


async def test_a_body_under_the_cap_passes(api, db) -> None:
    team = await make_team(db, plan="pro", credits="500")
    body = b'{"referenceModelId": "business-headshot", "prompt": "a boat", "resolution": "256x256"}'
    reply = await api.post("/api/v1/generate", content=chunks(body), headers={**auth(team), "Content-Type": "application/json"})
    assert reply.status_code == 202, reply.text


def noise_png(size: int) -> bytes:
    """A PNG of random pixels of about ``size`` × ``size`` × 3 bytes (noise does not compress)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_uploads_have_their_own_cap(api, db, settings) -> None:
    """The upload cap (not the smaller JSON cap) applies to multipart uploads of training images:
    400 KiB of images pass, 600 KiB are 413 whether declared or chunked, and nothing is saved."""
    team = await make_team(db, plan="pro", credits="500")
    form = {"referenceModelId": "fitness-yoga", "name": "big"}
    under = [("trainingImages", (f"{i}.png", noise_png(210), "image/png")) for i in range(3)]
    ok = await api.post("/api/v1/models", data=form, files=under, headers=auth(team))
    assert ok.status_code == 202, ok.text

    other = await make_team(db, plan="pro", credits="500")
    over = [("trainingImages", (f"{i}.png", noise_png(210), "image/png")) for i in range(5)]
    declared = await api.post("/api/v1/models", data=form, files=over, headers=auth(other))
    assert_too_large(declared)

    request = httpx.Request("POST", "http://testserver/api/v1/models", data=form, files=over, headers=auth(other))
    streamed = await api.post("/api/v1/models", content=chunks(request.read()),
                              headers={**auth(other), "Content-Type": request.headers["Content-Type"]})
    assert_too_large(streamed)
    async with db.transaction() as session:
        assert await session.scalar(text("SELECT count(*) FROM custom_models WHERE team_id = :t"), {"t": other.team_id}) == 0
    assert not (settings.storage_dir / str(other.team_id)).exists()


async def test_the_json_cap_applies_to_multipart_bodies_elsewhere(api, db) -> None:
    team = await make_team(db, plan="pro", credits="500")
    files = [("image", ("a.png", solid_png((1, 2, 3)) + b"x" * 300 * 1024, "image/png"))]
    reply = await api.post("/api/v1/generate", files=files, headers=auth(team))
    assert_too_large(reply)
