"""``pixelmint storage …`` through the real command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pixelmint.kit.db import Database
from pixelmint.storage.backend import LocalStorage
from pixelmint.storage.s3 import S3Storage
from tests.builders import make_team
from tests.storage.builders import FUTURE, PAST, exists, image_rows, job_states, make_image, make_job

pytestmark = pytest.mark.slow


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIXELMINT_", "AWS_")) and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "pixelmint.cli", *args], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


async def test_storage_cleanup_dry_run_then_for_real(db: Database, database_url: str, tmp_path: Path) -> None:
    files = LocalStorage(tmp_path / "images", "secret")  # where PIXELMINT_DATA_DIR=tmp_path puts them
    team = await make_team(db)
    job = await make_job(db, team=team)
    expired = await make_image(db, files, team=team, job_id=job, expires_in=PAST)
    kept = await make_image(db, files, team=team, job_id=await make_job(db, team=team), expires_in=FUTURE)
    env = {"DATABASE_URL": database_url, "PIXELMINT_DATA_DIR": str(tmp_path), "PIXELMINT_SECRET_KEY": "secret"}

    dry = cli("storage", "cleanup", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 1 expired image(s)" in dry.stdout and "1 job(s) expired" in dry.stdout
    assert await image_rows(db) == {expired: False, kept: False}
    assert await exists(files, expired)

    real = cli("storage", "cleanup", "--json", "--batch-size", "10", **env)
    assert real.returncode == 0, real.stderr
    report = json.loads(real.stdout)
    assert (report["imagesDeleted"], report["jobsExpired"], report["dryRun"]) == (1, 1, False)
    assert await image_rows(db) == {expired: True, kept: False}
    assert (await job_states(db))[job] == "expired"
    assert not await exists(files, expired) and await exists(files, kept)


def test_apply_lifecycle_refuses_the_local_backend(tmp_path: Path) -> None:
    result = cli("storage", "apply-lifecycle", PIXELMINT_DATA_DIR=str(tmp_path))
    assert result.returncode == 2
    assert "needs the S3 backend (PIXELMINT_STORAGE_BACKEND=s3)" in result.stderr


def test_apply_lifecycle_on_s3(s3_endpoint: str, s3_storage: S3Storage, s3_client: Any, tmp_path: Path) -> None:
    env = {
        "PIXELMINT_DATA_DIR": str(tmp_path), "PIXELMINT_STORAGE_BACKEND": "s3", "PIXELMINT_S3_BUCKET": s3_storage.bucket,
        "PIXELMINT_S3_ENDPOINT_URL": s3_endpoint, "PIXELMINT_S3_REGION": "us-east-1", "PIXELMINT_S3_PREFIX": "pm/",
        "PIXELMINT_S3_ACCESS_KEY_ID": "testing", "PIXELMINT_S3_SECRET_ACCESS_KEY": "testing",
        "PIXELMINT_IMAGE_RETENTION_DAYS": "45",
    }
    result = cli("storage", "apply-lifecycle", **env)
    assert result.returncode == 0, result.stderr
    assert "objects under 'pm/generated/' expire after 45 days" in result.stdout
    (rule,) = s3_client.get_bucket_lifecycle_configuration(Bucket=s3_storage.bucket)["Rules"]
    assert rule["Expiration"] == {"Days": 45} and rule["Filter"] == {"Prefix": "pm/generated/"}

    missing = cli("storage", "apply-lifecycle", **{**env, "PIXELMINT_S3_BUCKET": "no-such-bucket-here"})
    assert missing.returncode == 1 and "PIXELMINT_S3_BUCKET" in missing.stderr


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_admin_check_storage(db: Database, database_url: str, tmp_path: Path, backend: str,
                                   request: pytest.FixtureRequest) -> None:
    env = {"DATABASE_URL": database_url, "PIXELMINT_DATA_DIR": str(tmp_path), "PIXELMINT_SECRET_KEY": "secret"}
    if backend == "local":
        storage: LocalStorage | S3Storage = LocalStorage(tmp_path / "images", "secret")
    else:
        storage = request.getfixturevalue("s3_storage")
        env |= {"PIXELMINT_STORAGE_BACKEND": "s3", "PIXELMINT_S3_BUCKET": storage.bucket,
                "PIXELMINT_S3_ENDPOINT_URL": request.getfixturevalue("s3_endpoint"), "PIXELMINT_S3_REGION": "us-east-1",
                "PIXELMINT_S3_PREFIX": "pm/", "PIXELMINT_S3_ACCESS_KEY_ID": "testing",
                "PIXELMINT_S3_SECRET_ACCESS_KEY": "testing"}
    team = await make_team(db)
    job = await make_job(db, team=team)
    await make_image(db, storage, team=team, job_id=job, expires_in=FUTURE)
    lost = await make_image(db, storage, team=team, job_id=job, expires_in=FUTURE)
    await storage.delete(lost)

    found = cli("admin", "check-storage", "--json", **env)
    assert found.returncode == 1 and "1 of 2 image(s) have no object" in found.stderr
    report = json.loads(found.stdout)
    assert (report["ok"], report["checkedImages"]) == (False, 2)
    assert [(m["storageKey"], m["jobId"]) for m in report["missing"]] == [(lost, str(job))]
    assert cli("admin", "check-storage", **env).stdout.startswith(f"missing_object\tteam {team.team_id}\tjob {job}")

    await storage.put(lost, b"restored", content_type="image/png", metadata={})
    ok = cli("admin", "check-storage", **env)
    assert ok.returncode == 0 and "storage check ok: all 2 image(s) have their object" in ok.stdout
