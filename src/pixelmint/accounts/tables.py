"""ORM classes for plans, teams, users, API keys, and the dashboard's people: web sessions, team
invites and one-time password links."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String, func, text
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


ROLES = ("owner", "admin", "member")


class User(Base):
    """A person (or the first user the CLI makes) in exactly one team, with a role there.

    One team per user (``team_id`` + ``role``, not a memberships table): the free-generation
    allowance, API keys and jobs all hang on the user, and a ``Principal`` names one team, so a
    user in several teams would need a team switch in every session and an allowance per team.
    Someone in two teams signs up twice, with two emails. Emails are unique among users not removed,
    compared lower-case (stored lower-case by ``accounts/people.py``)."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('owner', 'admin', 'member')", name="role_valid"),
        Index("ux_users_email", func.lower(text("email")), unique=True,
              postgresql_where=text("email IS NOT NULL AND removed_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    # Freemium allowance: image generations this user may still run at no cost.
    free_generations_remaining: Mapped[int] = mapped_column(server_default=text("3"))
    created_at: Mapped[dt.datetime] = created_at_column()
    # Argon2id (pwdlib); None: the user cannot sign in with a password (yet).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), server_default="member")
    # Removed from the team: cannot sign in, sessions and API keys revoked; rows kept for history.
    removed_at: Mapped[dt.datetime | None]


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
    # Updated at most once a minute by ``service.authenticate``.
    last_used_at: Mapped[dt.datetime | None]


class WebSession(Base):
    """A dashboard sign-in: the cookie holds a random token, this row its SHA-256."""

    __tablename__ = "web_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = created_at_column()
    last_seen_at: Mapped[dt.datetime] = created_at_column()
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class TeamInvite(Base):
    """A link that lets its holder join the team with ``role`` (shown once to the inviter)."""

    __tablename__ = "team_invites"
    __table_args__ = (CheckConstraint("role IN ('owner', 'admin', 'member')", name="role_valid"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = created_at_column()
    expires_at: Mapped[dt.datetime]
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    accepted_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class PasswordToken(Base):
    """A one-time link to set a user's password (``pixelmint admin create-team --email``)."""

    __tablename__ = "password_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = created_at_column()
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
