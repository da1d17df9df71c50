"""ORM class for the reference-model catalog."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column


class ReferenceModel(Base):
    __tablename__ = "reference_models"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(50), index=True)
    description: Mapped[str] = mapped_column(String(2000), server_default="")
    complexity_factor: Mapped[Decimal] = mapped_column(Numeric(4, 2))
    popularity: Mapped[int] = mapped_column(server_default=text("0"))
    characteristics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # "default" (the server's PIXELMINT_DEFAULT_PROVIDER) or a provider name
    provider: Mapped[str] = mapped_column(String(50), server_default="default")
    provider_model: Mapped[str | None] = mapped_column(String(200))
    # Model identifier at each provider, e.g. {"fal": "fal-ai/flux-lora", "replicate": "owner/model"}
    provider_models: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # [{"key": storage key, "width": px, "height": px, "seed": int}] rendered when the catalog is seeded
    preview_images: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[dt.datetime] = created_at_column()
