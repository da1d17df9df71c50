"""Admin billing operations shared by the API (``billing/admin_endpoints.py``) and the CLI
(``pixelmint admin grant|adjust|void|set-plan``): grant, adjust and void credits with a reason,
change a team's plan. Each takes the caller's session and never commits.

Every ledger row written here carries the admin's ``reason`` as its description and
``metadata.source`` = ``"admin"`` (``"cli"`` from the command line).

Lock order (as everywhere): ``teams`` → ``credit_balances`` → ``team_dispatch``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts import service as accounts
from pixelmint.credits import service as credits
from pixelmint.credits.errors import InvalidAmount
from pixelmint.credits.tables import CreditBalance, CreditTransaction
from pixelmint.jobs import queue


def _positive(amount: Decimal) -> Decimal:
    if amount <= 0:
        raise InvalidAmount("amount must be > 0.")
    return amount


async def grant(
    session: AsyncSession, *, team_id: uuid.UUID, amount: Decimal, bucket: str, reason: str, source: str = "admin"
) -> CreditTransaction:
    """Grant ``amount`` (> 0) credits into ``bucket``: ``bonus`` (persist) or ``allocation``
    (expire at the next replenishment). One ``grant`` ledger row; void it with ``void``.
    Raises ``InvalidRequest`` 422 (invalid_amount, invalid_bucket, reason_required), ``NotFound``
    404 team_not_found."""
    credits.require_bucket(bucket)
    reason = credits.require_reason(reason)
    return await credits.grant(
        session, team_id=team_id, amount=_positive(amount), bucket=bucket, ledger_type="grant",
        description=reason, metadata={"source": source},
    )


async def adjust(
    session: AsyncSession, *, team_id: uuid.UUID, amount: Decimal, bucket: str, reason: str, source: str = "admin"
) -> CreditTransaction:
    """A signed correction of one bucket; see ``credits.service.adjust`` (409
    bucket_would_go_negative)."""
    return await credits.adjust(
        session, team_id=team_id, amount=amount, bucket=bucket, reason=reason, metadata={"source": source}
    )


async def void(
    session: AsyncSession, *, team_id: uuid.UUID, transaction_id: int, reason: str, source: str = "admin"
) -> CreditTransaction:
    """Reverse grant ``transaction_id`` once; see ``credits.service.void_grant`` for the refusals."""
    return await credits.void_grant(
        session, team_id=team_id, transaction_id=transaction_id, reason=reason, metadata={"source": source}
    )


async def switch_plan(session: AsyncSession, *, team_id: uuid.UUID, plan_code: str) -> accounts.PlanChange:
    """Move a team to ``plan_code``: ``teams.plan_code`` (``accounts.service.change_plan``) and the
    queue's claim gate (``jobs.queue.set_team_limits``: new jobs see the new priority and
    concurrency, running ones finish). Locks the team row, then its ``team_dispatch`` row (the
    documented lock order puts ``credit_balances`` before both: a caller that also replenishes
    does that first). Credits do not move. Raises 422 unknown_plan, 404 team_not_found."""
    change = await accounts.change_plan(session, team_id=team_id, plan_code=plan_code)
    await queue.set_team_limits(session, team_id=team_id, plan=change.plan)
    return change


@dataclass(frozen=True)
class PlanChanged:
    change: accounts.PlanChange
    replenishment: credits.Replenishment | None
    balance: CreditBalance


async def change_plan(
    session: AsyncSession,
    *,
    team_id: uuid.UUID,
    plan_code: str,
    replenish_now: bool = False,
    reason: str | None = None,
    source: str = "admin",
) -> PlanChanged:
    """Move a team to ``plan_code`` (``switch_plan``: new jobs see the new priority and
    concurrency, running ones finish).

    Credits: with ``replenish_now`` the team is replenished at once to the new plan's monthly
    credits (the allocation left expires) and its next replenishment is 30 days from now (none for
    a plan without monthly credits). Otherwise the allocation is untouched and the new amount
    applies from the next scheduled replenishment; a team that had none scheduled (it was on the
    free plan) and moves to a plan with monthly credits is scheduled now, so the replenishment task
    grants them on its next run. Raises 422 unknown_plan, 404 team_not_found.
    """
    plan = await accounts.get_plan(session, plan_code)
    await accounts.get_team(session, team_id, for_update=True)
    note = f"plan changed to {plan.code}" + (f": {reason.strip()}" if reason and reason.strip() else "")
    replenishment = None
    if replenish_now:
        now = dt.datetime.now(dt.UTC)
        replenishment = await credits.replenish(
            session, team_id=team_id, amount=plan.monthly_credits,
            next_replenishment_at=now + accounts.REPLENISHMENT_PERIOD if plan.monthly_credits > 0 else None,
            reason=note, metadata={"source": source, "plan": plan.code},
        )
    else:
        balance = await credits.get_balance(session, team_id)
        if balance.next_replenishment_at is None and plan.monthly_credits > 0:
            await credits.set_next_replenishment(session, team_id=team_id, at=dt.datetime.now(dt.UTC))
    change = await switch_plan(session, team_id=team_id, plan_code=plan.code)
    balance = await credits.get_balance(session, team_id)
    await session.refresh(balance)
    return PlanChanged(change=change, replenishment=replenishment, balance=balance)
