"""ORM classes for plans, teams, users and API keys."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String, text
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column


class Plan(Base):
    """A subscription plan: monthly credits, paid-job concurrency and queue priority."""

    __tablename__ = "plans"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    monthly_credits: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    max_concurrent_jobs: Mapped[int]
    # Higher runs first when teams compete for workers (enterprise > pro > basic > free).
    queue_priority: Mapped[int]


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    plan_code: Mapped[str] = mapped_column(ForeignKey("plans.code"))
    created_at: Mapped[dt.datetime] = created_at_column()
    # Stripe (billing/stripe_events.py): the customer, linked on the first event that names the
    # team; the active subscription, whose invoices replenish the team (the periodic task skips it).
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    # Freemium allowance: image generations this user may still run at no cost.
    free_generations_remaining: Mapped[int] = mapped_column(server_default=text("3"))
    created_at: Mapped[dt.datetime] = created_at_column()


class ApiKey(Base):
    """A bearer key. Only its SHA-256 digest is stored; ``prefix`` identifies it to humans."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), server_default="default")
    created_at: Mapped[dt.datetime] = created_at_column()
    revoked_at: Mapped[dt.datetime | None]
