"""Builders for storage tests: finished jobs and image rows with their objects."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import text

from pixelmint.accounts.service import CreatedTeam
from pixelmint.kit.db import Database
from pixelmint.storage.backend import Storage, StorageError
from pixelmint.storage.service import storage_key

# expires_in for make_image: already expired, and not for a while
PAST, FUTURE = -dt.timedelta(days=1), dt.timedelta(days=30)


async def make_job(db: Database, *, team: CreatedTeam, state: str = "succeeded") -> uuid.UUID:
    """A finished image-generation job row (no reservation: retention does not touch credits)."""
    async with db.transaction() as session:
        return await session.scalar(
            text("""INSERT INTO jobs (team_id, user_id, type, state, params, provider, estimated_credits,
                                      charged_credits, finished_at)
                    VALUES (:team, :user, 'image_generation', :state, '{}'::jsonb, 'procedural', 4.80, 4.80, now())
                    RETURNING id"""),
            {"team": team.team_id, "user": team.user_id, "state": state},
        )


async def make_image(
    db: Database,
    storage: Storage,
    *,
    team: CreatedTeam,
    job_id: uuid.UUID,
    expires_in: dt.timedelta,
    deleted: bool = False,
    data: bytes = b"\x89PNG fake image bytes",
) -> str:
    """An image row expiring ``expires_in`` from now, and its object (unless ``deleted``, as after a
    user's DELETE). Returns its storage key."""
    image_id, now = uuid.uuid4(), dt.datetime.now(dt.UTC)
    key = storage_key(team.team_id, image_id, now)
    if not deleted:
        await storage.put(key, data, content_type="image/png", metadata={"team": str(team.team_id), "job": str(job_id)})
    async with db.transaction() as session:
        await session.execute(
            text("""INSERT INTO images (id, team_id, job_id, user_id, storage_key, width, height, size_bytes, seed,
                                        expires_at, deleted_at)
                    VALUES (:id, :team, :job, :user, :key, 64, 64, :size, 1, :expires,
                            CASE WHEN :deleted THEN now() END)"""),
            {"id": image_id, "team": team.team_id, "job": job_id, "user": team.user_id, "key": key,
             "size": len(data), "expires": now + expires_in, "deleted": deleted},
        )
    return key


async def exists(storage: Storage, key: str) -> bool:
    try:
        await storage.get(key)
    except StorageError:
        return False
    return True


async def image_rows(db: Database) -> dict[str, bool]:
    """storage key → whether the row is marked deleted."""
    async with db.transaction() as session:
        rows = await session.execute(text("SELECT storage_key, deleted_at IS NOT NULL FROM images"))
        return {key: deleted for key, deleted in rows}  # noqa: C416 -- dict(rows) reads a Result as a mapping (it has keys())


async def job_states(db: Database) -> dict[uuid.UUID, str]:
    async with db.transaction() as session:
        return dict((await session.execute(text("SELECT id, state FROM jobs"))).all())
