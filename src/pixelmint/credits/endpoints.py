"""``/api/v1/credits``: balance and ledger history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from pixelmint.accounts.service import get_user
from pixelmint.api.deps import PrincipalDep, SessionDep
from pixelmint.credits import service
from pixelmint.credits.schemas import BalanceOut, TransactionOut, TransactionPage
from pixelmint.kit.pagination import decode_cursor, encode_cursor

router = APIRouter(prefix="/api/v1/credits", tags=["credits"])


@router.get("/balance", response_model=BalanceOut, summary="The team's credit balance")
async def balance(principal: PrincipalDep, session: SessionDep) -> BalanceOut:
    b = await service.get_balance(session, principal.team_id)
    user = await get_user(session, principal.user_id)
    return BalanceOut(
        available_credits=b.allocation_credits + b.bonus_credits,
        allocation_credits=b.allocation_credits,
        bonus_credits=b.bonus_credits,
        reserved_credits=b.reserved_credits,
        total_allocated=b.total_allocated,
        next_replenishment_at=b.next_replenishment_at,
        free_generations_remaining=user.free_generations_remaining,
    )


@router.get("/history", response_model=TransactionPage, summary="The credit ledger, newest first")
async def history(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> TransactionPage:
    before = int(decode_cursor(cursor)[0]) if cursor else None
    rows = await service.list_transactions(session, principal.team_id, limit=limit + 1, before_id=before)
    page = rows[:limit]
    return TransactionPage(
        items=[
            TransactionOut(
                id=t.id, type=t.type, amount=t.amount, allocation_delta=t.allocation_delta,
                bonus_delta=t.bonus_delta, reserved_delta=t.reserved_delta,
                available_after=t.allocation_after + t.bonus_after, reserved_after=t.reserved_after,
                operation=t.operation, job_id=t.job_id, reservation_id=t.reservation_id,
                description=t.description, metadata=t.metadata_, created_at=t.created_at,
            )
            for t in page
        ],
        next_cursor=encode_cursor(page[-1].id) if len(rows) > limit else None,
    )
