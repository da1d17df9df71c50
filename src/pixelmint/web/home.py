"""Home: the team's balance in its buckets, the person's free generations, the plan and its
renewal, credits spent per day (30 days, by operation) and the recent jobs."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts import service as accounts
from pixelmint.credits import service as credits
from pixelmint.credits.history import DailyUsage, usage_by_day
from pixelmint.jobs import service as jobs
from pixelmint.kit.http import SessionDep
from pixelmint.web.auth import CurrentUserDep
from pixelmint.web.routing import web_router
from pixelmint.web.templating import render

router = web_router(prefix="/app")

CHART_DAYS = 30
OPERATION_LABELS = {
    "image_generation": "Image generation", "model_creation": "Model training", "model_refinement": "Refinement",
}
COLOURS = ("#0172ad", "#d97706", "#059669", "#7c3aed", "#db2777", "#64748b")


def usage_chart(usage: list[DailyUsage], days: int = CHART_DAYS) -> dict[str, Any]:
    """A Chart.js stacked bar chart config: one bar per day, one dataset per operation."""
    today = dt.datetime.now(dt.UTC).date()
    labels = [today - dt.timedelta(days=days - 1 - i) for i in range(days)]
    operations = sorted({u.operation for u in usage})
    by = {(u.day, u.operation): u.credits for u in usage}
    return {
        "type": "bar",
        "data": {
            "labels": [d.strftime("%b %d") for d in labels],
            "datasets": [
                {"label": OPERATION_LABELS.get(op, op), "backgroundColor": COLOURS[i % len(COLOURS)],
                 "data": [float(by.get((d, op), Decimal(0))) for d in labels]}
                for i, op in enumerate(operations)
            ],
        },
        "options": {
            "responsive": True, "maintainAspectRatio": False, "animation": False,
            "scales": {"x": {"stacked": True}, "y": {"stacked": True, "beginAtZero": True,
                                                      "title": {"display": True, "text": "credits"}}},
        },
    }


async def usage_context(session: AsyncSession, team_id: uuid.UUID) -> dict[str, Any]:
    """What ``_usage.html``'s ``usage_section`` shows: credits used per day over CHART_DAYS days."""
    usage = await usage_by_day(session, team_id, days=CHART_DAYS)
    return {"usage": usage, "usage_total": sum((u.credits for u in usage), Decimal(0)), "chart": usage_chart(usage),
            "operation_labels": OPERATION_LABELS}


@router.get("")
async def home(request: Request, session: SessionDep, user: CurrentUserDep) -> Response:
    balance = await credits.get_balance(session, user.team_id)
    person = await accounts.get_user(session, user.user_id)
    plan = await accounts.get_plan(session, user.principal.plan_code)
    recent = await jobs.list_jobs(session, user.principal, limit=10)
    return render(request, "home.html", {
        "balance": balance, "available": balance.allocation_credits + balance.bonus_credits,
        "free_left": person.free_generations_remaining, "plan": plan, "jobs": recent,
        **await usage_context(session, user.team_id),
    })
