"""The API and its in-process worker on the S3 backend (moto): generate, download, delete, expire."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from pixelmint.api.app import create_app
from pixelmint.flows.retention import cleanup_expired
from pixelmint.settings import Settings
from tests.builders import auth, generate_body, make_team


@pytest.fixture
async def s3_api(settings: Settings, database_url: str, s3_endpoint: str, s3_bucket: str) -> AsyncIterator[httpx.AsyncClient]:
    """``api_with_worker`` with ``PIXELMINT_STORAGE_BACKEND=s3`` against the moto server."""
    s3_settings = settings.model_copy(update={
        "storage_backend": "s3", "s3_bucket": s3_bucket, "s3_endpoint_url": s3_endpoint, "s3_region": "us-east-1",
        "s3_access_key_id": "testing", "s3_secret_access_key": SecretStr("testing"), "s3_prefix": "pm/",
    })
    app = create_app(s3_settings, database_url, run_worker=True)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def object_key(url: str, bucket: str) -> str:
    return url.split(f"/{bucket}/", 1)[1].split("?", 1)[0]


async def test_generated_images_live_in_s3_from_generation_to_expiry(
    s3_api: httpx.AsyncClient, db, s3_client: Any, s3_bucket: str
) -> None:
    team = await make_team(db, plan="basic")
    body = generate_body(resolution="320x192", seed=11, numImages=2, waitForResult=True)
    reply = await s3_api.post("/api/v1/generate", json=body, headers=auth(team))
    assert reply.status_code == 200, reply.text
    job = reply.json()["job"]
    assert job["status"] == "succeeded"
    first, second = job["images"]
    assert first["url"].startswith(f"{s3_client.meta.endpoint_url}/{s3_bucket}/pm/generated/{team.team_id}/")

    async with httpx.AsyncClient() as outside:  # a real HTTP request to the S3 server
        download = await outside.get(first["url"])
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(download.content)).size == (320, 192)

    key = object_key(first["url"], s3_bucket)
    meta = s3_client.head_object(Bucket=s3_bucket, Key=key)["Metadata"]
    assert meta == {"team": str(team.team_id), "job": job["id"], "model": meta["model"]} and meta["model"]
    # The local backend's /files route serves nothing on S3.
    assert (await s3_api.get(f"/files/{key}?expires=9999999999&signature=x")).status_code == 404

    # Deleting one image deletes its object.
    assert (await s3_api.delete(f"/api/v1/images/{first['id']}", headers=auth(team))).status_code == 204
    assert s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="pm/generated/")["KeyCount"] == 1

    # After the retention period the cleanup deletes the other one and the job shows as expired.
    runtime = s3_api.app.state.runtime  # type: ignore[attr-defined]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=runtime.settings.image_retention_days + 1)
    report = await cleanup_expired(runtime.db, runtime.storage, now=later)
    assert (report.images_deleted, report.jobs_expired) == (1, 1)
    assert s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="pm/generated/")["KeyCount"] == 0
    status = (await s3_api.get(f"/api/v1/generate/{job['id']}", headers=auth(team))).json()["job"]
    assert status["status"] == "expired" and status["images"] == []
    assert (await s3_api.get(f"/api/v1/images/{second['id']}", headers=auth(team))).status_code == 404
