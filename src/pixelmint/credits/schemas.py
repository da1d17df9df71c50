"""JSON shapes (camelCase) of the credit endpoints: the team's balance and ledger, the credit API
for apps (service keys), the apps a team grants, and their administration. Credits are numbers
with at most two decimals."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from pixelmint.credits.apps import Grant
from pixelmint.credits.tables import CreditBalance, CreditReservation, CreditTransaction
from pixelmint.kit.schemas import (
    RESOLUTION_PATTERN,
    CamelModel,
    Credits,
    NonNegativeCredits,
    PositiveCredits,
    RequestModel,
)


class BucketsOut(CamelModel):
    """A balance's buckets (credits): available = allocation (expires at the next replenishment) +
    bonus (kept until used); reserved is held by unfinished jobs and holds."""

    available_credits: Credits
    allocation_credits: Credits
    bonus_credits: Credits
    reserved_credits: Credits
    total_allocated: Credits
    next_replenishment_at: dt.datetime | None

    @staticmethod
    def fields_of(b: CreditBalance) -> dict[str, Any]:
        return {
            "available_credits": b.allocation_credits + b.bonus_credits, "allocation_credits": b.allocation_credits,
            "bonus_credits": b.bonus_credits, "reserved_credits": b.reserved_credits,
            "total_allocated": b.total_allocated, "next_replenishment_at": b.next_replenishment_at,
        }


class BalanceOut(BucketsOut):
    """The calling team's balance and the calling user's free generations."""

    free_generations_remaining: int
    low_balance_threshold: Credits | None = Field(
        None, description="A credits.low_balance webhook is sent when available credits fall below it.")


class LowBalanceThresholdIn(RequestModel):
    threshold: NonNegativeCredits | None = Field(description="Credits; null: no credits.low_balance webhooks.")


class LowBalanceThresholdOut(CamelModel):
    threshold: Credits | None


class TransactionOut(CamelModel):
    id: int
    type: str
    amount: Credits
    allocation_delta: Credits
    bonus_delta: Credits
    reserved_delta: Credits
    available_after: Credits
    reserved_after: Credits
    operation: str | None
    job_id: uuid.UUID | None
    app_id: uuid.UUID | None = None  # the credit-API app that wrote the row
    reservation_id: uuid.UUID | None
    description: str | None
    metadata: dict[str, Any]
    created_at: dt.datetime


class TransactionPage(CamelModel):
    items: list[TransactionOut]
    next_cursor: str | None


class TeamBalanceOut(BucketsOut):
    """A team's balance, as apps (``/credits/team-balance``) and admins see it."""

    team_id: uuid.UUID
    allocation_period: int
    allocation_period_started_at: dt.datetime


def present_balance(b: CreditBalance) -> TeamBalanceOut:
    return TeamBalanceOut(
        **BucketsOut.fields_of(b), team_id=b.team_id, allocation_period=b.allocation_period,
        allocation_period_started_at=b.allocation_period_started_at,
    )


def present_transaction(t: CreditTransaction) -> TransactionOut:
    return TransactionOut(
        id=t.id, type=t.type, amount=t.amount, allocation_delta=t.allocation_delta, bonus_delta=t.bonus_delta,
        reserved_delta=t.reserved_delta, available_after=t.allocation_after + t.bonus_after,
        reserved_after=t.reserved_after, operation=t.operation, job_id=t.job_id, app_id=t.app_id,
        reservation_id=t.reservation_id, description=t.description, metadata=t.metadata_, created_at=t.created_at,
    )


# The credit API for apps (credits/app_endpoints.py)

OperationName = Annotated[str, Field(min_length=1, max_length=64)]


class OperationRequest(RequestModel):
    team_id: uuid.UUID
    operation: OperationName = Field(examples=["deck"])
    amount: PositiveCredits | None = Field(None, description="Credits; default: the app's price for the operation")


class ValidateOut(CamelModel):
    has_credits: bool
    available_credits: Credits
    required_credits: Credits


class ConsumeRequest(OperationRequest):
    description: str | None = Field(None, max_length=500)
    metadata: dict[str, Any] = {}


class ConsumeOut(CamelModel):
    transaction_id: int
    consumed_credits: Credits
    available_credits: Credits


class ReserveRequest(OperationRequest):
    ttl_seconds: int = Field(300, description="Seconds before an unsettled hold is released (1..the server's "
                             "PIXELMINT_MAX_HOLD_SECONDS, 86,400 by default: invalid_ttl)",
                             json_schema_extra={"minimum": 1, "maximum": 86_400})


class HoldOut(CamelModel):
    hold_id: uuid.UUID
    team_id: uuid.UUID
    operation: str
    amount: Credits
    status: Literal["held", "captured", "released"]
    captured_amount: Credits | None
    expires_at: dt.datetime | None


class CaptureRequest(RequestModel):
    hold_id: uuid.UUID
    amount: NonNegativeCredits | None = None


class ReleaseRequest(RequestModel):
    hold_id: uuid.UUID


def present_hold(held: CreditReservation) -> HoldOut:
    return HoldOut(hold_id=held.id, team_id=held.team_id, operation=held.operation, amount=held.amount,
                   status=held.status, captured_amount=held.captured_amount, expires_at=held.expires_at)


class UsageOut(CamelModel):
    app: str
    operation: str
    count: int
    credits: Credits


class UsagePage(CamelModel):
    items: list[UsageOut]


# The apps a team grants (credits/endpoints.py) and their administration (credits/admin_endpoints.py)

class AppGrantOut(CamelModel):
    app_id: uuid.UUID
    app_name: str
    team_id: uuid.UUID
    granted_by: Literal["admin", "team"]
    granted_at: dt.datetime


class AppGrantPage(CamelModel):
    items: list[AppGrantOut]


def present_grant(g: Grant) -> AppGrantOut:
    return AppGrantOut(app_id=g.app_id, app_name=g.app_name, team_id=g.team_id, granted_by=g.granted_by,
                       granted_at=g.granted_at)


class AppIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    operations: dict[OperationName, NonNegativeCredits] = Field(default_factory=dict, examples=[{"deck": 10}])
    team_ids: list[uuid.UUID] = Field(default_factory=list, description="Teams that grant the app at once")


class AppCreated(CamelModel):
    app_id: uuid.UUID
    service_key: str


# POST /credits/estimate (flows/endpoints.py)

class EstimateRequest(RequestModel):
    """One of ``referenceModelId`` or ``customModelId`` (model_required)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["referenceModelId"], "properties": {"referenceModelId": {"type": "string"}}},
        {"required": ["customModelId"], "properties": {"customModelId": {"type": "string"}}},
    ]})

    operation: Literal["image_generation", "model_creation", "model_refinement"]
    reference_model_id: str | None = Field(None, min_length=1, max_length=100)
    custom_model_id: uuid.UUID | None = None
    resolution: str = Field("1024x1024", json_schema_extra={"pattern": RESOLUTION_PATTERN})
    quality: Literal["standard", "hd"] = "standard"
    num_images: int = Field(1, json_schema_extra={"minimum": 1, "maximum": 4})
    training_images: int = Field(5, ge=1, le=50)
    iteration: int | None = Field(None, ge=0, le=100, description="Refinement iteration; default: the model's version")


class EstimateOut(CamelModel):
    operation: str
    estimated_credits: Credits
