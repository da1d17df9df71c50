"""ORM class for custom models (trained from a reference model)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.credits.tables import CREDITS
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
    # The current version's artifact (procedural: the derived style; remote: weights URL, config).
    artifact: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    trigger_word: Mapped[str | None] = mapped_column(String(100))
    training_steps: Mapped[int] = mapped_column(server_default=text("1000"))
    # [{"key": storage key, "filename": str, "contentType": str, "sizeBytes": int}]
    training_images: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    error_message: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = created_at_column()
    deleted_at: Mapped[dt.datetime | None]


class CustomModelVersion(Base):
    """One version of a custom model: version 1 is the trained model, later ones refinements."""

    __tablename__ = "custom_model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_custom_model_versions_model_version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("custom_models.id"))
    version: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))  # creation | refinement
    prompt: Mapped[str | None] = mapped_column(String(2000))
    iteration: Mapped[int]
    cost: Mapped[Decimal] = mapped_column(CREDITS)
    artifact: Mapped[dict[str, Any]] = mapped_column(JSONB)
    job_id: Mapped[uuid.UUID | None]
    created_at: Mapped[dt.datetime] = created_at_column()
