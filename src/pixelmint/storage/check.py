"""The storage check (``pixelmint admin check-storage``): image rows whose object is missing.

Every image row that is not deleted must have its object in storage; a row without one is an
image a team paid for and can no longer download. The check reads the rows in batches of
``batch_size`` (keyset by id, one short transaction each) and asks the storage about each key
(``Storage.exists``; a ``HEAD`` per object on S3). A row whose object is missing is read once
more ``FOR SHARE`` before it is reported: a retention cleanup deletes objects while it holds their
rows, before it commits ``deleted_at``, so this waits for it and an image expiring at that moment
is not reported. (A user's delete commits ``deleted_at`` before it deletes the object.)
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from pixelmint.kit.db import Database
from pixelmint.storage.backend import Storage
from pixelmint.storage.tables import Image


@dataclass(frozen=True)
class MissingObject:
    image_id: uuid.UUID
    job_id: uuid.UUID
    team_id: uuid.UUID
    storage_key: str

    def as_dict(self) -> dict[str, str]:
        return {"imageId": str(self.image_id), "jobId": str(self.job_id), "teamId": str(self.team_id),
                "storageKey": self.storage_key}


@dataclass
class StorageCheck:
    """``checked``: image rows looked at; ``missing``: those whose object is not in storage."""

    checked: int = 0
    missing: list[MissingObject] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.missing, "checkedImages": self.checked,
                "missing": [m.as_dict() for m in self.missing]}


async def check_storage(db: Database, storage: Storage, *, batch_size: int = 500) -> StorageCheck:
    """Check that every image row that is not deleted has its object in ``storage``. Like
    ``cleanup_expired`` it owns its (read-only) transactions. Raises ``StorageError`` when the
    storage cannot answer and ``ValueError`` for ``batch_size < 1``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    report = StorageCheck()
    columns = select(Image.id, Image.job_id, Image.team_id, Image.storage_key).where(Image.deleted_at.is_(None))
    after: uuid.UUID | None = None
    while True:
        query = columns if after is None else columns.where(Image.id > after)
        async with db.transaction() as session:
            rows = (await session.execute(query.order_by(Image.id).limit(batch_size))).all()
        if not rows:
            return report
        report.checked += len(rows)
        found = await asyncio.gather(*(storage.exists(row.storage_key) for row in rows))
        absent = [row for row, present in zip(rows, found, strict=True) if not present]
        if absent:
            async with db.transaction() as session:
                still = set(await session.scalars(
                    select(Image.id).where(Image.id.in_([row.id for row in absent]), Image.deleted_at.is_(None))
                    .with_for_update(read=True)
                ))
            report.missing += [MissingObject(row.id, row.job_id, row.team_id, row.storage_key)
                               for row in absent if row.id in still]
        if len(rows) < batch_size:
            return report
        after = rows[-1].id
