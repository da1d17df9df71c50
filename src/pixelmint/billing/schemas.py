"""JSON shapes (camelCase) of the admin credit endpoints and the Stripe webhook. Credits are
numbers with at most two decimals."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from pixelmint.credits.schemas import TeamBalanceOut, TransactionOut
from pixelmint.kit.schemas import CamelModel, Credits

Amount = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]
Reason = Annotated[str, Field(min_length=1, max_length=500, description="Why; stored in the ledger row")]
Bucket = Literal["bonus", "allocation"]


class GrantIn(CamelModel):
    amount: Annotated[Amount, Field(gt=0)]
    bucket: Bucket = Field("bonus", description="bonus credits persist; allocation expires at the next replenishment")
    reason: Reason


class AdjustIn(CamelModel):
    amount: Amount = Field(description="Signed: added to the bucket; the bucket cannot go below 0 (409)")
    bucket: Bucket
    reason: Reason


class VoidIn(CamelModel):
    transaction_id: int = Field(description="Ledger id of the grant to reverse (once)")
    reason: Reason


class ChangePlanIn(CamelModel):
    plan: str = Field(min_length=1, max_length=32, examples=["pro"])
    replenish_now: bool = Field(
        False, description="Replenish to the new plan's monthly credits now (the allocation left expires)"
    )
    reason: str | None = Field(None, max_length=400)


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
