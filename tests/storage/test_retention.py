"""Retention cleanup against real PostgreSQL and both storage backends (files, moto S3)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import text

from pixelmint.api.runtime import Runtime
from pixelmint.flows.retention import cleanup_expired
from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from pixelmint.storage.backend import LocalStorage, Storage, StorageError
from pixelmint.storage.s3 import S3Storage
from tests.builders import make_team
from tests.storage.builders import FUTURE, PAST, exists, image_rows, job_states, make_image, make_job
from tests.storage.conftest import S3_KEYS


async def test_cleanup_deletes_expired_objects_marks_rows_and_expires_jobs(db: Database, storage: Storage) -> None:
    team = await make_team(db)
    all_expired = await make_job(db, team=team)  # two expired images → job expires
    mixed = await make_job(db, team=team)  # one expired, one not → job stays succeeded
    fresh = await make_job(db, team=team)  # nothing expired → untouched
    user_deleted = await make_job(db, team=team)  # one deleted by its user earlier, one expired → expires
    failed = await make_job(db, team=team, state="failed")  # not succeeded: never 'expired'
    expired_keys = [
        await make_image(db, storage, team=team, job_id=all_expired, expires_in=PAST),
        await make_image(db, storage, team=team, job_id=all_expired, expires_in=PAST * 2),
        await make_image(db, storage, team=team, job_id=mixed, expires_in=PAST),
        await make_image(db, storage, team=team, job_id=user_deleted, expires_in=PAST),
        await make_image(db, storage, team=team, job_id=failed, expires_in=PAST),
    ]
    kept_keys = [
        await make_image(db, storage, team=team, job_id=mixed, expires_in=FUTURE),
        await make_image(db, storage, team=team, job_id=fresh, expires_in=FUTURE),
    ]
    await make_image(db, storage, team=team, job_id=user_deleted, expires_in=FUTURE, deleted=True)
    rows_before, states_before = await image_rows(db), await job_states(db)

    preview = await cleanup_expired(db, storage, dry_run=True)
    assert (preview.dry_run, preview.images_deleted, preview.jobs_expired) == (True, 5, 2)
    assert preview.bytes_deleted == 5 * len(b"\x89PNG fake image bytes")
    assert await image_rows(db) == rows_before and await job_states(db) == states_before
    assert all([await exists(storage, key) for key in expired_keys + kept_keys])

    report = await cleanup_expired(db, storage, batch_size=2)
    assert (report.images_deleted, report.jobs_expired, report.batches, report.lock_busy) == (5, 2, 3, False)
    assert report.bytes_deleted == preview.bytes_deleted
    assert [await exists(storage, key) for key in expired_keys] == [False] * 5
    assert [await exists(storage, key) for key in kept_keys] == [True, True]
    rows = await image_rows(db)
    assert all(rows[key] for key in expired_keys) and not any(rows[key] for key in kept_keys)
    assert await job_states(db) == {
        all_expired: "expired", mixed: "succeeded", fresh: "succeeded", user_deleted: "expired", failed: "failed"
    }

    again = await cleanup_expired(db, storage)
    assert (again.images_deleted, again.jobs_expired, again.batches) == (0, 0, 0)

    # Later the rest expires too.
    later = await cleanup_expired(db, storage, now=dt.datetime.now(dt.UTC) + FUTURE * 2)
    assert (later.images_deleted, later.jobs_expired) == (2, 2)
    assert set((await job_states(db)).values()) == {"expired", "failed"}


class Recording:
    """A real backend that also records the keys handed to ``delete_many``."""

    def __init__(self, inner: Storage) -> None:
        self.inner, self.deleted = inner, []  # type: ignore[var-annotated]

    async def delete_many(self, keys: Sequence[str]) -> None:
        self.deleted.extend(keys)
        await self.inner.delete_many(keys)
        await asyncio.sleep(0)  # let the other cleaner try the lock mid-batch


async def test_concurrent_cleanups_share_the_work_without_double_deletes(database_url: str, storage: Storage) -> None:
    one, two = Database.connect(database_url, pool_size=2), Database.connect(database_url, pool_size=2)
    try:
        team = await make_team(one)
        keys = []
        for _ in range(15):
            job = await make_job(one, team=team)
            keys += [await make_image(one, storage, team=team, job_id=job, expires_in=PAST) for _ in range(2)]
        first, second = Recording(storage), Recording(storage)
        reports = await asyncio.gather(
            *(cleanup_expired(db, rec, batch_size=4) for db, rec in ((one, first), (two, second)))  # type: ignore[arg-type]
        )
        assert sorted(first.deleted + second.deleted) == sorted(keys)  # each key exactly once
        assert sum(r.images_deleted for r in reports) == 30
        assert sum(r.jobs_expired for r in reports) == 15
        assert set((await job_states(one)).values()) == {"expired"}
        assert all((await image_rows(one)).values())
        assert [await exists(storage, key) for key in keys] == [False] * 30
    finally:
        await one.dispose()
        await two.dispose()


async def test_rows_locked_by_a_request_are_skipped_not_waited_for(db: Database, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "secret")
    team = await make_team(db)
    job = await make_job(db, team=team)
    keys = [await make_image(db, storage, team=team, job_id=job, expires_in=PAST) for _ in range(3)]
    async with db.transaction() as request:  # e.g. DELETE /api/v1/images/{id} in flight
        await request.execute(text("SELECT 1 FROM images WHERE storage_key = :k FOR UPDATE"), {"k": keys[0]})
        report = await asyncio.wait_for(cleanup_expired(db, storage), 10)
        assert report.images_deleted == 2 and report.jobs_expired == 0
        assert await exists(storage, keys[0])
    report = await cleanup_expired(db, storage)
    assert (report.images_deleted, report.jobs_expired) == (1, 1)


async def test_a_storage_failure_rolls_the_batch_back(db: Database, s3_endpoint: str, s3_storage: S3Storage) -> None:
    team = await make_team(db)
    job = await make_job(db, team=team)
    key = await make_image(db, s3_storage, team=team, job_id=job, expires_in=PAST)
    broken = S3Storage(bucket="no-such-bucket-here", endpoint_url=s3_endpoint, region="us-east-1", **S3_KEYS)
    with pytest.raises(StorageError, match="PIXELMINT_S3_BUCKET"):
        await cleanup_expired(db, broken)
    assert await image_rows(db) == {key: False} and await job_states(db) == {job: "succeeded"}
    assert (await cleanup_expired(db, s3_storage)).images_deleted == 1
    assert not await exists(s3_storage, key)


async def test_worker_runtime_runs_cleanup_periodically_and_stops_it(db: Database, settings: Settings, database_url: str) -> None:
    team = await make_team(db)
    job = await make_job(db, team=team)
    files = LocalStorage(settings.storage_dir, "test-secret")
    key = await make_image(db, files, team=team, job_id=job, expires_in=PAST)

    api_only = await Runtime.start(settings, database_url, run_worker=False)
    assert api_only.retention is None
    await api_only.stop()

    runtime = await Runtime.start(settings, database_url, run_worker=True)
    try:
        assert runtime.retention is not None
        await asyncio.wait_for(runtime.retention.ran.wait(), 20)
        assert runtime.retention.last_report is not None and runtime.retention.last_report.images_deleted == 1
        assert await image_rows(db) == {key: True} and await job_states(db) == {job: "expired"}
        assert not await exists(files, key)
    finally:
        await runtime.stop()
    assert runtime._retention_task is not None and runtime._retention_task.done()
