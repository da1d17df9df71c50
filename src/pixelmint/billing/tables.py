"""ORM classes of the billing domain: received Stripe events."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column


class StripeEvent(Base):
    """One verified Stripe webhook event, stored under its id (so a replay is a no-op) in the
    transaction that processed it. ``outcome`` says what processing did (``applied``,
    ``ignored_unknown_customer``, ``ignored_type``, …; ``detail`` says why)."""

    __tablename__ = "stripe_events"
    __table_args__ = (Index("ix_stripe_events_customer_id_created", "customer_id", "event_created"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    livemode: Mapped[bool] = mapped_column(server_default=text("false"))
    # The event's ``created`` (Stripe's clock): orders subscription events that arrive out of order.
    event_created: Mapped[dt.datetime]
    customer_id: Mapped[str | None] = mapped_column(String(255))
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    outcome: Mapped[str] = mapped_column(String(64), server_default="received")
    detail: Mapped[str | None] = mapped_column(String(1000))
    received_at: Mapped[dt.datetime] = created_at_column()
