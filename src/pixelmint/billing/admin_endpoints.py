"""``/api/v1/admin/teams/{teamId}/…``: grant, adjust and void credits, change a team's plan.

Admin only (``Authorization: Bearer $PIXELMINT_ADMIN_TOKEN``). Thin: the rules are in
``billing/service.py`` and ``credits/service.py``. Every credit change needs a ``reason``, stored
as the ledger row's description; the reply is the ledger row plus the balance after it.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.errors import TeamNotFound, UnknownPlan
from pixelmint.billing import service as billing
from pixelmint.billing.schemas import AdjustIn, AdminCreditsOut, ChangePlanIn, GrantIn, PlanOut, VoidIn
from pixelmint.credits import service as credits
from pixelmint.credits.errors import (
    AlreadyVoided,
    BucketWouldGoNegative,
    GrantExpired,
    InvalidAmount,
    NotVoidable,
    ReasonRequired,
    TransactionNotFound,
)
from pixelmint.credits.schemas import present_balance, present_transaction
from pixelmint.credits.tables import CreditTransaction
from pixelmint.kit.errors import responses
from pixelmint.kit.http import AdminDep, SessionDep

router = APIRouter(prefix="/api/v1/admin/teams/{team_id}", tags=["admin"])

_ERRORS = responses(
    TeamNotFound, TransactionNotFound, BucketWouldGoNegative, AlreadyVoided, NotVoidable, GrantExpired,
    ReasonRequired, InvalidAmount, UnknownPlan,
)


async def _reply(session: AsyncSession, team_id: uuid.UUID, entry: CreditTransaction) -> AdminCreditsOut:
    balance = await credits.get_balance(session, team_id)
    return AdminCreditsOut(transaction=present_transaction(entry), balance=present_balance(balance))


@router.post("/credits/grant", response_model=AdminCreditsOut, responses=_ERRORS,
             summary="Grant bonus or allocation credits, with a reason")
async def grant(team_id: uuid.UUID, body: GrantIn, _: AdminDep, session: SessionDep) -> AdminCreditsOut:
    entry = await billing.grant(session, team_id=team_id, amount=body.amount, bucket=body.bucket, reason=body.reason)
    return await _reply(session, team_id, entry)


@router.post("/credits/adjust", response_model=AdminCreditsOut, responses=_ERRORS,
             summary="Correct a bucket by a signed amount (never below 0), with a reason")
async def adjust(team_id: uuid.UUID, body: AdjustIn, _: AdminDep, session: SessionDep) -> AdminCreditsOut:
    entry = await billing.adjust(session, team_id=team_id, amount=body.amount, bucket=body.bucket, reason=body.reason)
    return await _reply(session, team_id, entry)


@router.post("/credits/void", response_model=AdminCreditsOut, responses=_ERRORS,
             summary="Reverse a grant by its ledger id (once), with a reason")
async def void(team_id: uuid.UUID, body: VoidIn, _: AdminDep, session: SessionDep) -> AdminCreditsOut:
    entry = await billing.void(session, team_id=team_id, transaction_id=body.transaction_id, reason=body.reason)
    return await _reply(session, team_id, entry)


@router.post("/plan", response_model=PlanOut, responses=_ERRORS,
             summary="Change the team's plan (queue priority and concurrency at once)")
async def change_plan(team_id: uuid.UUID, body: ChangePlanIn, _: AdminDep, session: SessionDep) -> PlanOut:
    done = await billing.change_plan(
        session, team_id=team_id, plan_code=body.plan, replenish_now=body.replenish_now, reason=body.reason
    )
    plan = done.change.plan
    return PlanOut(
        team_id=team_id, plan=plan.code, previous_plan=done.change.previous_plan, monthly_credits=plan.monthly_credits,
        max_concurrent_jobs=plan.max_concurrent_jobs, queue_priority=plan.queue_priority,
        replenished=done.replenishment is not None, balance=present_balance(done.balance),
    )
