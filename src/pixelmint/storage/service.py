"""Images: rows in ``images`` plus objects in storage; listing, lookup and deletion per team."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.storage.errors import ImageNotFound
from pixelmint.storage.tables import Image

# Generated images live under their own top-level prefix, apart from objects that must not
# expire (catalog previews under ``catalog/``, custom models' training images): the S3 lifecycle
# rule (``pixelmint storage apply-lifecycle``) filters on it.
GENERATED_PREFIX = "generated/"


def storage_key(team_id: uuid.UUID, image_id: uuid.UUID, created: dt.datetime, extension: str = "png") -> str:
    """Keys are laid out by team and date: ``generated/<team>/<yyyy>/<mm>/<dd>/<image>.<ext>``."""
    return f"{GENERATED_PREFIX}{team_id}/{created:%Y/%m/%d}/{image_id}.{extension}"


async def add_images(session: AsyncSession, images: list[Image]) -> None:
    """Record a job's stored images (in its success transaction)."""
    session.add_all(images)
    await session.flush()


_TAKE_EXPIRED = text("""
WITH batch AS (
    SELECT id FROM images
     WHERE expires_at <= :now AND deleted_at IS NULL
     ORDER BY expires_at
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
)
UPDATE images AS i SET deleted_at = now()
 WHERE i.id = ANY(ARRAY(SELECT id FROM batch))  -- a primary-key lookup, never a join over images
RETURNING i.job_id, i.storage_key, i.size_bytes
""")


async def take_expired(session: AsyncSession, *, now: dt.datetime, limit: int) -> list[Row[Any]]:
    """Mark up to ``limit`` images expired by ``now`` deleted, oldest first, skipping rows others
    hold; their ``(job_id, storage_key, size_bytes)``. The objects are the caller's to delete
    (``flows/retention.py``)."""
    return list((await session.execute(_TAKE_EXPIRED, {"now": now, "limit": limit})).all())


def readable(team_id: uuid.UUID):
    """Images a team may see: its own, not deleted."""
    return select(Image).where(Image.team_id == team_id, Image.deleted_at.is_(None))


async def get_image(session: AsyncSession, team_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    image = await session.scalar(readable(team_id).where(Image.id == image_id))
    if image is None:
        raise ImageNotFound("No such image.")
    return image


async def list_images(
    session: AsyncSession,
    team_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[dt.datetime, uuid.UUID] | None,
    job_id: uuid.UUID | None = None,
    favorite: bool | None = None,
    model_key: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[Image]:
    """Newest first; ``after`` is the (created_at, id) of the last image of the previous page.
    ``job_id``: that job's only; ``favorite``: only the favourites (``True``) or only the others
    (``False``); ``model_key``: made by that model (``params.modelKey``: a reference model id or
    ``custom:<id>:v<version>``); ``since <= created_at < until``."""
    query = readable(team_id)
    if job_id is not None:
        query = query.where(Image.job_id == job_id)
    if model_key is not None:
        query = query.where(Image.params["modelKey"].astext == model_key)
    if since is not None:
        query = query.where(Image.created_at >= since)
    if until is not None:
        query = query.where(Image.created_at < until)
    if favorite is not None:
        query = query.where(Image.favorited_at.is_not(None) if favorite else Image.favorited_at.is_(None))
    if after is not None:
        query = query.where(tuple_(Image.created_at, Image.id) < tuple_(*after))
    query = query.order_by(Image.created_at.desc(), Image.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def model_keys(session: AsyncSession, team_id: uuid.UUID) -> list[str]:
    """The models (``params.modelKey``) the team's images were made with, sorted."""
    keys = await session.scalars(
        select(Image.params["modelKey"].astext).where(Image.team_id == team_id, Image.deleted_at.is_(None)).distinct()
    )
    return sorted(k for k in keys if k)


async def images_for_jobs(session: AsyncSession, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Image]]:
    rows = await session.scalars(
        select(Image).where(Image.job_id.in_(job_ids), Image.deleted_at.is_(None)).order_by(Image.seed)
    )
    found: dict[uuid.UUID, list[Image]] = {job_id: [] for job_id in job_ids}
    for image in rows:
        found[image.job_id].append(image)
    return found


async def referenced_keys(session: AsyncSession, job_id: uuid.UUID, keys: Collection[str]) -> set[str]:
    """The storage keys among ``keys`` that an image row of the job references (deleted or not)."""
    found = await session.scalars(
        select(Image.storage_key).where(Image.job_id == job_id, Image.storage_key.in_(list(keys)))
    )
    return set(found)


async def set_favorite(session: AsyncSession, team_id: uuid.UUID, image_id: uuid.UUID, favorite: bool) -> Image:
    """Star (``favorite``) or unstar one of the team's images; idempotent (starring a favourite
    keeps the time it was first starred). Raises ``ImageNotFound`` (404) for an image the team
    cannot see (unknown, another team's, deleted)."""
    starred = func.coalesce(Image.favorited_at, func.now()) if favorite else None
    image = await session.scalar(
        update(Image)
        .where(Image.team_id == team_id, Image.id == image_id, Image.deleted_at.is_(None))
        .values(favorited_at=starred)
        .returning(Image)
        .execution_options(populate_existing=True)
    )
    if image is None:
        raise ImageNotFound("No such image.")
    return image


async def mark_deleted(session: AsyncSession, image: Image) -> None:
    image.deleted_at = dt.datetime.now(dt.UTC)
    await session.flush()
