"""The storage check: image rows whose object is missing, on both backends (files, moto S3)."""

from __future__ import annotations

from pixelmint.kit.db import Database
from pixelmint.storage.backend import Storage
from pixelmint.storage.check import check_storage
from tests.builders import make_team
from tests.storage.builders import FUTURE, PAST, make_image, make_job


async def test_check_reports_the_rows_whose_object_is_missing(db: Database, storage: Storage) -> None:
    team = await make_team(db)
    job = await make_job(db, team=team)
    kept = [await make_image(db, storage, team=team, job_id=job, expires_in=expiry) for expiry in (FUTURE, PAST)]
    lost = await make_image(db, storage, team=team, job_id=job, expires_in=FUTURE)
    await make_image(db, storage, team=team, job_id=job, expires_in=FUTURE, deleted=True)  # deleted: no object expected
    await storage.delete(lost)
    assert [await storage.exists(key) for key in (*kept, lost)] == [True, True, False]

    report = await check_storage(db, storage, batch_size=2)  # two batches
    assert report.checked == 3 and [m.storage_key for m in report.missing] == [lost]
    assert report.as_dict()["ok"] is False and report.missing[0].job_id == job

    await storage.put(lost, b"restored", content_type="image/png", metadata={})
    assert (await check_storage(db, storage)).as_dict() == {"ok": True, "checkedImages": 3, "missing": []}
