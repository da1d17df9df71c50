from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pixelmint.kit.schemas import CamelModel, Credits


class BalanceOut(CamelModel):
    available_credits: Credits
    allocation_credits: Credits
    bonus_credits: Credits
    reserved_credits: Credits
    total_allocated: Credits
    next_replenishment_at: dt.datetime | None
    free_generations_remaining: int


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
