"""A new team: its account (accounts), its balance and first allocation (credits) and its claim
gate in the queue (jobs), in the caller's transaction."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts import service as accounts
from pixelmint.credits import service as credits
from pixelmint.jobs import queue


async def create_team(
    session: AsyncSession,
    *,
    name: str,
    plan_code: str,
    credits_amount: Decimal | None = None,
    user_name: str = "owner",
    email: str | None = None,
    free_generations: int = 3,
    password_hash: str | None = None,
    with_api_key: bool = True,
) -> accounts.CreatedTeam:
    """Create a team on ``plan_code`` with its first user (the owner) and, ``with_api_key``, an
    API key. ``email`` and ``password_hash`` let the owner sign in to the dashboard
    (``accounts/people.py``).

    The team starts with the plan's monthly allocation, or ``credits_amount`` if given, granted
    into the allocation bucket through the ledger. The plaintext key is returned once. Raises
    ``InvalidRequest`` 422 unknown_plan and ``Conflict`` 409 email_taken.
    """
    plan = await accounts.get_plan(session, plan_code)
    created = await accounts.add_team(
        session, name=name, plan=plan, user_name=user_name, email=email, free_generations=free_generations,
        password_hash=password_hash, with_api_key=with_api_key,
    )
    now = dt.datetime.now(dt.UTC)
    await credits.open_balance(
        session,
        team_id=created.team_id,
        next_replenishment_at=now + accounts.REPLENISHMENT_PERIOD if plan.monthly_credits > 0 else None,
    )
    amount = plan.monthly_credits if credits_amount is None else credits_amount
    if amount > 0:
        await credits.grant(
            session, team_id=created.team_id, amount=amount, bucket="allocation", ledger_type="grant",
            description=f"initial allocation ({plan.code} plan)",
        )
    await queue.open_team_dispatch(session, team_id=created.team_id, plan=plan)
    return created
