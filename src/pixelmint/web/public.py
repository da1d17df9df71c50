"""The pages anyone may open: the landing page, sign-up, sign-in, sign-out, accepting an invite
and setting a password from a one-time link."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from pixelmint.accounts import service as accounts
from pixelmint.credits.pricing import current_pricing
from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.web.routing import web_router
from pixelmint.web.templating import render

router = web_router()


@router.get("/")
async def landing(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """What Pixelmint does, the plans (from the plans table, prices from ``PIXELMINT_PLAN_PRICES``)
    and the cost formulas in words (from the pricing table in force)."""
    plans = await accounts.list_plans(session)
    pricing = await current_pricing(session)
    return render(request, "landing.html", {
        "plans": plans, "prices": settings.plan_prices, "pricing": pricing,
        "free_generations": settings.free_generations_per_user, "signup_enabled": settings.signup_enabled,
    })
