"""Image response shapes and their presentation with signed URLs."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from pixelmint.kit.schemas import CamelModel
from pixelmint.storage.backend import Storage
from pixelmint.storage.tables import Image


class ImageOut(CamelModel):
    id: uuid.UUID
    job_id: uuid.UUID
    url: str
    url_expires_at: dt.datetime
    content_type: str
    width: int
    height: int
    size_bytes: int
    seed: int
    params: dict[str, Any]
    created_at: dt.datetime
    expires_at: dt.datetime
    favorite: bool = Field(description="Starred by a member of the team (POST/DELETE /api/v1/images/{id}/favorite)")


class ImagePage(CamelModel):
    items: list[ImageOut]
    next_cursor: str | None


@dataclass(frozen=True)
class UrlSigner:
    """Signed links to stored objects for one request: served from ``base_url``, valid for
    ``ttl_seconds`` (``PIXELMINT_SIGNED_URL_TTL_SECONDS``). ``storage/deps.UrlSignerDep`` makes one."""

    storage: Storage
    base_url: str
    ttl_seconds: int

    def url(self, key: str, *, ttl_seconds: int | None = None) -> str:
        return self.storage.url(key, base_url=self.base_url, ttl_seconds=ttl_seconds or self.ttl_seconds)


def present_image(image: Image, urls: UrlSigner) -> ImageOut:
    """An image with a signed URL valid for ``urls.ttl_seconds`` (never past the image's expiry)."""
    now = dt.datetime.now(dt.UTC)
    ttl = max(1, min(urls.ttl_seconds, int((image.expires_at - now).total_seconds())))
    return ImageOut(
        id=image.id, job_id=image.job_id, url=urls.url(image.storage_key, ttl_seconds=ttl),
        url_expires_at=now + dt.timedelta(seconds=ttl), content_type=image.content_type, width=image.width,
        height=image.height, size_bytes=image.size_bytes, seed=image.seed, params=image.params,
        created_at=image.created_at, expires_at=image.expires_at, favorite=image.favorited_at is not None,
    )
