"""ORM classes of outbound webhooks: endpoints per team, messages (events), deliveries (one per
message and target, the delivery queue) and their attempts (the delivery log), plus each team's
default signing secret for ad-hoc targets (Replicate-style per-prediction webhooks)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column

DELIVERY_STATUSES = ("pending", "succeeded", "failed")


class WebhookEndpoint(Base):
    """A team's receiver: ``url`` gets every event in ``event_types`` (empty: all), signed with
    ``secret`` (``whsec_…``) and, until ``previous_secret_expires_at``, also with the secret it
    replaced (rotation). ``failing_since``: the start of the current run of failed attempts (an
    endpoint failing for ``PIXELMINT_WEBHOOK_DISABLE_AFTER_SECONDS`` is disabled)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_team_id", "team_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), server_default="")
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default=text("'{}'"))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[dt.datetime | None]
    failing_since: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = created_at_column()


class WebhookSigningSecret(Base):
    """A team's default signing secret: signs deliveries to ad-hoc URLs (a per-prediction
    ``webhook`` of the Replicate-compatible API; Replicate's ``GET /v1/webhooks/default/secret``)."""

    __tablename__ = "webhook_signing_secrets"

    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = created_at_column()


class WebhookMessage(Base):
    """One event: ``payload`` is the JSON body sent (``{"type", "timestamp", "data"}`` for team
    events); its id is the ``webhook-id`` header, the same on every attempt."""

    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_team_id", "team_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = created_at_column()


class WebhookDelivery(Base):
    """A message to one target (an endpoint, or an ad-hoc ``url``): the delivery queue.

    ``pending`` rows whose ``next_attempt_at`` has come are claimed with ``FOR UPDATE SKIP
    LOCKED`` (``webhooks/delivery.py``); a claim moves ``next_attempt_at`` past the attempt's
    timeout (the lease: a process that dies mid-attempt leaves the row to be retried).
    ``last_*`` repeat the latest attempt's outcome (``webhook_attempts`` has them all)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN {DELIVERY_STATUSES}", name="status_valid"),
        CheckConstraint("num_nonnulls(endpoint_id, url) = 1", name="one_target"),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", text("created_at DESC"), "id"),
        Index("ix_webhook_deliveries_message_id", "message_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    url: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(server_default=text("now()"))
    last_attempt_at: Mapped[dt.datetime | None]
    last_status_code: Mapped[int | None]
    last_response: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = created_at_column()


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: the delivery log. ``response``: the first KiB of the
    answer's body; ``error``: why no answer counted (timeout, refused address, redirect…)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    succeeded: Mapped[bool]
    status_code: Mapped[int | None]
    response: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = created_at_column()
