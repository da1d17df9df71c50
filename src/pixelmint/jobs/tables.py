"""ORM classes for the job queue: jobs, their attempts, and per-team dispatch rows.

The jobs table is the queue (see ``jobs/queue.py`` and ``../shared/reference/queues.md`` §B).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.credits.tables import CREDITS
from pixelmint.kit.db import Base, created_at_column
from pixelmint.kit.ids import new_id

JOB_STATES = ("queued", "running", "awaiting_webhook", "succeeded", "failed", "canceled", "expired")
JOB_TYPES = ("image_generation", "model_creation", "model_refinement")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"state IN {JOB_STATES}", name="state_valid"),
        CheckConstraint(f"type IN {JOB_TYPES}", name="type_valid"),
        Index(
            "ix_jobs_ready",
            "team_id",
            text("priority DESC"),
            "run_at",
            "created_at",
            postgresql_where=text("state = 'queued'"),
        ),
        Index("ix_jobs_running_team", "team_id", postgresql_where=text("state = 'running'")),
        Index("ix_jobs_awaiting_team", "team_id", postgresql_where=text("state = 'awaiting_webhook'")),
        Index("ix_jobs_running_lease", "lease_expires_at", postgresql_where=text("state = 'running'")),
        Index("ix_jobs_team_created", "team_id", text("created_at DESC"), "id"),
        Index("ix_jobs_custom_model", "custom_model_id", postgresql_where=text("custom_model_id IS NOT NULL")),
        Index("ix_jobs_provider_request", "provider", "provider_request_id",
              postgresql_where=text("provider_request_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id, server_default=text("gen_random_uuid()"))
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    type: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32), server_default="queued")
    priority: Mapped[int] = mapped_column(server_default=text("0"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reference_model_id: Mapped[str | None] = mapped_column(ForeignKey("reference_models.id"))
    custom_model_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("custom_models.id"))
    custom_model_version: Mapped[int | None]
    provider: Mapped[str] = mapped_column(String(50))
    # The provider's id for the request (webhooks carry it) and the handle its client resumes with.
    provider_request_id: Mapped[str | None] = mapped_column(String(200))
    provider_handle: Mapped[str | None] = mapped_column(String(300))
    estimated_credits: Mapped[Decimal] = mapped_column(CREDITS)
    charged_credits: Mapped[Decimal | None] = mapped_column(CREDITS)
    reservation_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("credit_reservations.id"))
    is_free: Mapped[bool] = mapped_column(server_default=text("false"))
    attempt: Mapped[int] = mapped_column(server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(server_default=text("3"))
    run_at: Mapped[dt.datetime] = created_at_column()
    locked_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None]
    cancel_requested_at: Mapped[dt.datetime | None]
    progress: Mapped[int] = mapped_column(server_default=text("0"))
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[dt.datetime] = created_at_column()
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class JobAttempt(Base):
    """One run of a job by one worker: the record that proves concurrency limits held."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[uuid.UUID] = mapped_column(index=True)
    attempt: Mapped[int]
    worker_id: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    # succeeded | failed | retry | canceled | lease_expired
    outcome: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(String(2000))


class ProviderWebhookEvent(Base):
    """A verified provider callback, stored raw under its delivery id so it is handled once."""

    __tablename__ = "provider_webhook_events"
    __table_args__ = (UniqueConstraint("provider", "delivery_id", name="uq_provider_webhook_events_delivery"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider: Mapped[str] = mapped_column(String(50))
    delivery_id: Mapped[str] = mapped_column(String(300))
    request_id: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[uuid.UUID | None]
    state: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[dt.datetime] = created_at_column()


class JobLog(Base):
    """A log line of a job (worker and provider messages), in order."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = created_at_column()
    message: Mapped[str] = mapped_column(String(2000))


class TeamDispatch(Base):
    """Per-team claim gate and round-robin cursor (queues.md §B.1).

    ``max_running`` is the team's concurrency limit, denormalised from its plan; ``has_ready`` says
    the team may have queued jobs; ``last_dispatched_at`` orders teams least recently served first.
    """

    __tablename__ = "team_dispatch"
    __table_args__ = (
        Index(
            "ix_team_dispatch_ready",
            text("priority DESC"),
            "last_dispatched_at",
            "team_id",
            postgresql_where=text("has_ready"),
        ),
    )

    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    priority: Mapped[int] = mapped_column(server_default=text("0"))
    max_running: Mapped[int]
    has_ready: Mapped[bool] = mapped_column(server_default=text("false"))
    last_dispatched_at: Mapped[dt.datetime] = mapped_column(server_default=text("'-infinity'"))
