"""JSON shapes (camelCase) of the admin credit endpoints and the Stripe webhook. Credits are
numbers with at most two decimals."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field, StrictBool

from pixelmint.credits.schemas import TransactionOut
from pixelmint.credits.tables import CreditBalance, CreditTransaction
from pixelmint.kit.schemas import CamelModel, CreditAmount, Credits, PositiveCredits, RequestModel

Reason = Annotated[str, Field(min_length=1, max_length=500, description="Why; stored in the ledger row")]
Bucket = Literal["bonus", "allocation"]


class GrantIn(RequestModel):
    amount: PositiveCredits
    bucket: Bucket = Field("bonus", description="bonus credits persist; allocation expires at the next replenishment")
    reason: Reason


class AdjustIn(RequestModel):
    amount: CreditAmount = Field(description="Signed: added to the bucket; the bucket cannot go below 0 (409)")
    bucket: Bucket
    reason: Reason


class VoidIn(RequestModel):
    transaction_id: int = Field(ge=1, le=2**63 - 1, description="Ledger id of the grant to reverse (once)")
    reason: Reason


class ChangePlanIn(RequestModel):
    plan: str = Field(min_length=1, max_length=32, examples=["pro"])
    replenish_now: StrictBool = Field(
        False, description="Replenish to the new plan's monthly credits now (the allocation left expires)"
    )
    reason: str | None = Field(None, max_length=400)


class TeamBalanceOut(CamelModel):
    team_id: uuid.UUID
    available_credits: Credits
    allocation_credits: Credits
    bonus_credits: Credits
    reserved_credits: Credits
    total_allocated: Credits
    next_replenishment_at: dt.datetime | None
    allocation_period: int
    allocation_period_started_at: dt.datetime


class AdminCreditsOut(CamelModel):
    """The ledger row written and the team's balance after it."""

    transaction: TransactionOut
    balance: TeamBalanceOut


class PlanOut(CamelModel):
    team_id: uuid.UUID
    plan: str
    previous_plan: str
    monthly_credits: Credits
    max_concurrent_jobs: int
    queue_priority: int
    replenished: bool
    balance: TeamBalanceOut


class StripeWebhookOut(CamelModel):
    received: bool = True
    event_id: str
    type: str
    duplicate: bool = Field(description="The event id was seen before: nothing was done this time")
    outcome: str


def present_balance(b: CreditBalance) -> TeamBalanceOut:
    return TeamBalanceOut(
        team_id=b.team_id, available_credits=b.allocation_credits + b.bonus_credits,
        allocation_credits=b.allocation_credits, bonus_credits=b.bonus_credits, reserved_credits=b.reserved_credits,
        total_allocated=b.total_allocated, next_replenishment_at=b.next_replenishment_at,
        allocation_period=b.allocation_period, allocation_period_started_at=b.allocation_period_started_at,
    )


def present_transaction(t: CreditTransaction) -> TransactionOut:
    return TransactionOut(
        id=t.id, type=t.type, amount=t.amount, allocation_delta=t.allocation_delta, bonus_delta=t.bonus_delta,
        reserved_delta=t.reserved_delta, available_after=t.allocation_after + t.bonus_after,
        reserved_after=t.reserved_after, operation=t.operation, job_id=t.job_id, app_id=t.app_id,
        reservation_id=t.reservation_id, description=t.description, metadata=t.metadata_, created_at=t.created_at,
    )
