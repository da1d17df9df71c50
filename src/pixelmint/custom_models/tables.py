"""ORM class for custom models (trained from a reference model)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ForeignKey, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column


class CustomModel(Base):
    __tablename__ = "custom_models"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), index=True)
    reference_model_id: Mapped[str] = mapped_column(ForeignKey("reference_models.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), server_default="")
    # pending | training | ready | failed
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    version: Mapped[int] = mapped_column(server_default=text("0"))
    artifact: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = created_at_column()
    deleted_at: Mapped[dt.datetime | None]
