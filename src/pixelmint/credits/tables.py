"""ORM classes for balances, the credit ledger and reservations.

The ledger (``credit_transactions``) is append-only; ``credit_balances`` is its cache, updated
under ``FOR UPDATE`` in the same transaction as every ledger row, so for every team
``allocation_credits == sum(allocation_delta)``, ``bonus_credits == sum(bonus_delta)`` and
``reserved_credits == sum(reserved_delta)``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, Numeric, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pixelmint.kit.db import Base, created_at_column
from pixelmint.kit.ids import new_id

CREDITS = Numeric(14, 2)


class CreditBalance(Base):
    """A team's balance in two buckets (monthly allocation, bonus) plus what is on hold."""

    __tablename__ = "credit_balances"
    __table_args__ = (
        CheckConstraint("allocation_credits >= 0", name="allocation_nonnegative"),
        CheckConstraint("bonus_credits >= 0", name="bonus_nonnegative"),
        CheckConstraint("reserved_credits >= 0", name="reserved_nonnegative"),
        Index("ix_credit_balances_next_replenishment_at", "next_replenishment_at",
              postgresql_where=text("next_replenishment_at IS NOT NULL")),
    )

    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    allocation_credits: Mapped[Decimal] = mapped_column(CREDITS, server_default=text("0"))
    bonus_credits: Mapped[Decimal] = mapped_column(CREDITS, server_default=text("0"))
    reserved_credits: Mapped[Decimal] = mapped_column(CREDITS, server_default=text("0"))
    total_allocated: Mapped[Decimal] = mapped_column(CREDITS, server_default=text("0"))
    next_replenishment_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = created_at_column()
    # The allocation period: +1 at every replenishment (credits.service.replenish), when the
    # allocation left expires. Holds remember the period they drew from
    # (``CreditReservation.allocation_period``).
    allocation_period: Mapped[int] = mapped_column(server_default=text("0"))
    allocation_period_started_at: Mapped[dt.datetime] = created_at_column()
    # ``credits.low_balance`` webhook: sent when available credits (allocation + bonus) fall from
    # at least this to below it (NULL: never). Read by the ledger statements that spend.
    low_balance_threshold: Mapped[Decimal | None] = mapped_column(CREDITS)


class CreditReservation(Base):
    """A hold on credits, settled exactly once: ``held`` → ``captured`` | ``released``."""

    __tablename__ = "credit_reservations"
    __table_args__ = (
        CheckConstraint("status IN ('held', 'captured', 'released')", name="status_valid"),
        Index("ix_credit_reservations_held", "team_id", postgresql_where=text("status = 'held'")),
        Index(
            "ix_credit_reservations_expiring", "expires_at",
            postgresql_where=text("status = 'held' AND expires_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    app_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("apps.id"))
    operation: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(CREDITS)
    from_allocation: Mapped[Decimal] = mapped_column(CREDITS)
    from_bonus: Mapped[Decimal] = mapped_column(CREDITS)
    status: Mapped[str] = mapped_column(String(16), server_default="held")
    captured_amount: Mapped[Decimal | None] = mapped_column(CREDITS)
    created_at: Mapped[dt.datetime] = created_at_column()
    settled_at: Mapped[dt.datetime | None]
    # The balance's allocation_period when the hold was taken (no default: every insert says it).
    # Settled in a later period, its allocation part is not given back: it expired.
    allocation_period: Mapped[int]
    # Holds taken through the credit API expire (and are released by the sweeper) after this.
    expires_at: Mapped[dt.datetime | None]


class CreditTransaction(Base):
    """One ledger row. ``*_delta`` are signed changes; ``*_after`` the balance after the change."""

    __tablename__ = "credit_transactions"
    __table_args__ = (
        CheckConstraint(
            "type IN ('grant', 'reserve', 'capture', 'release', 'adjust', 'replenish', 'expire', 'consume', 'void')",
            name="type_valid",
        ),
        Index("ix_credit_transactions_team_id_id", "team_id", text("id DESC")),
        # A grant is voided at most once (credits.service.void_grant).
        Index("ux_credit_transactions_voids", text("(metadata->>'voids')"), unique=True,
              postgresql_where=text("type = 'void'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id"))
    type: Mapped[str] = mapped_column(String(16))
    # Magnitude of the operation in credits (always >= 0), independent of which columns moved.
    amount: Mapped[Decimal] = mapped_column(CREDITS)
    allocation_delta: Mapped[Decimal] = mapped_column(CREDITS, server_default=text("0"))
    bonus_delta: Mapped[Decimal] = mapped_column(CREDITS, server_default=text("0"))
    reserved_delta: Mapped[Decimal] = mapped_column(CREDITS, server_default=text("0"))
    allocation_after: Mapped[Decimal] = mapped_column(CREDITS)
    bonus_after: Mapped[Decimal] = mapped_column(CREDITS)
    reserved_after: Mapped[Decimal] = mapped_column(CREDITS)
    operation: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    reservation_id: Mapped[uuid.UUID | None]
    app_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    user_id: Mapped[uuid.UUID | None]
    description: Mapped[str | None] = mapped_column(String(500))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = created_at_column()


class App(Base):
    """Another application that uses this ledger through the credit API (service key, hashed)."""

    __tablename__ = "apps"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = created_at_column()
    revoked_at: Mapped[dt.datetime | None]


class AppOperation(Base):
    """An app's price list: credits per named operation (e.g. flashcards ``deck`` = 10)."""

    __tablename__ = "app_operations"

    app_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    operation: Mapped[str] = mapped_column(String(64), primary_key=True)
    cost: Mapped[Decimal] = mapped_column(CREDITS)


class AppGrant(Base):
    """A team's permission for an app to use its credits (validate, consume, reserve, capture,
    release, usage, team-balance). Created by an admin or by the team; without it the app gets
    403 ``app_not_authorized`` for that team."""

    __tablename__ = "app_grants"
    __table_args__ = (CheckConstraint("granted_by IN ('admin', 'team')", name="granted_by_valid"),)

    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    app_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True, index=True)
    granted_by: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = created_at_column()


class PricingConfig(Base):
    """The pricing table: one row per operation with its base cost and multipliers (JSON), read by
    ``credits/pricing.py``; changed by admins without a deploy."""

    __tablename__ = "credit_pricing_config"

    operation: Mapped[str] = mapped_column(String(64), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[dt.datetime] = created_at_column()
