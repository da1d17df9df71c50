"""ORM class for stored images."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column
from pixelmint.kit.ids import new_id


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_team_created", "team_id", text("created_at DESC"), text("id DESC")),
        Index("ix_images_expires", "expires_at", postgresql_where=text("deleted_at IS NULL")),
        # GET /api/v1/images?favorite=true (migration 0002_image_favorites builds it concurrently)
        Index("ix_images_team_favorites", "team_id", text("created_at DESC"), text("id DESC"),
              postgresql_where=text("favorited_at IS NOT NULL AND deleted_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"), index=True)
    user_id: Mapped[uuid.UUID | None]
    storage_key: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(100), server_default="image/png")
    width: Mapped[int]
    height: Mapped[int]
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    seed: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = created_at_column()
    expires_at: Mapped[dt.datetime]
    deleted_at: Mapped[dt.datetime | None]
    # When a member of the team starred it (favourites are the team's); NULL: not a favourite.
    favorited_at: Mapped[dt.datetime | None]
