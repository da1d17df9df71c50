"""Credits: the balance in its buckets, the ledger (filters by type and dates, pages, a CSV
download that streams the same export as ``GET /api/v1/credits/history.csv``), credits used per
day (Chart.js), the plans side by side, and — with Stripe configured (``billing/checkout.py``) —
upgrading (a subscription through Stripe Checkout), buying a credit pack (Checkout, paid once)
and Stripe's customer portal. The resulting Stripe webhooks credit the team
(``billing/stripe_events.py``). Without Stripe the page says that an administrator grants credits.

Everyone in the team sees the page; owners and admins pay (``ManagerDep``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from pixelmint.accounts import service as accounts
from pixelmint.billing import checkout
from pixelmint.credits import history
from pixelmint.credits import service as credits
from pixelmint.credits.endpoints import csv_response
from pixelmint.credits.errors import InvalidDateRange
from pixelmint.kit.http import DatabaseDep, SessionDep, SettingsDep, base_url
from pixelmint.kit.pagination import bigint, decode_cursor, encode_cursor
from pixelmint.web.auth import CurrentUserDep, ManagerDep, WebPrincipalDep
from pixelmint.web.forms import CheckoutForm, WebForm
from pixelmint.web.home import OPERATION_LABELS, usage_context
from pixelmint.web.paging import Filters, day_range, with_query
from pixelmint.web.routing import web_router
from pixelmint.web.templating import is_htmx, render

router = web_router(prefix="/app/credits")

PAGE_SIZE = 50
LEDGER_TYPES = ("grant", "reserve", "capture", "release", "consume", "replenish", "expire", "adjust", "void")
TYPE_LABELS = {
    "grant": "granted", "reserve": "reserved", "capture": "charged", "release": "released", "consume": "spent",
    "replenish": "monthly credits", "expire": "expired", "adjust": "adjusted", "void": "grant voided",
}


def ledger_filter(filters: Filters, type_: str, since: str, until: str) -> history.LedgerFilter:
    """The page's filters (a type; whole UTC days, both inclusive) as the ledger's."""
    kind = filters.choice("type", type_, LEDGER_TYPES)
    start, end = day_range(filters.day("since", since), filters.day("until", until))
    if start and end and start >= end:
        filters.errors["until"] = "The end is before the start."
        end = None
    return history.LedgerFilter(types=(kind,) if kind else (), since=start, until=end)


@router.get("")
async def credits_page(
    request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUserDep,
    type: str = "", since: str = "", until: str = "", cursor: str = "",
) -> Response:
    """``?type=<ledger type>&since=YYYY-MM-DD&until=YYYY-MM-DD``, 50 rows a page (``cursor``)."""
    filters = Filters()
    ledger = ledger_filter(filters, type, since, until)
    before = decode_cursor(cursor, bigint)[0] if cursor else None
    rows = await history.list_transactions(session, user.team_id, ledger, limit=PAGE_SIZE + 1, before_id=before)
    page = rows[:PAGE_SIZE]
    next_link = with_query(request, cursor=encode_cursor(page[-1].id)) if len(rows) > PAGE_SIZE else None
    query = {k: v for k, v in {"type": type, "since": since, "until": until}.items() if v}
    context: dict[str, Any] = {
        "rows": page, "types": LEDGER_TYPES, "type_labels": TYPE_LABELS, "operation_labels": OPERATION_LABELS,
        "filters": {"type": type, "since": since, "until": until}, "errors": filters.errors,
        "next_link": next_link, "first_link": with_query(request, cursor=None) if cursor else None,
        "csv_link": "/app/credits/history.csv" + (f"?{urlencode(query)}" if query else ""),
    }
    if not is_htmx(request):  # the whole page; htmx paging the ledger gets its block only
        balance = await credits.get_balance(session, user.team_id)
        context |= {
            "balance": balance, "available": balance.allocation_credits + balance.bonus_credits,
            "plan": await accounts.get_plan(session, user.principal.plan_code),
            "plans": await accounts.list_plans(session), "prices": settings.plan_prices,
            "team": await accounts.get_team(session, user.team_id), **await usage_context(session, user.team_id),
            "stripe": checkout.enabled(settings), "offers": checkout.offers(settings),
            "checkout": request.query_params.get("checkout"),
        }
    return render(request, "credits.html", context, block="ledger")


@router.get("/history.csv")
async def history_csv(
    db: DatabaseDep, principal: WebPrincipalDep, type: str = "", since: str = "", until: str = "",
) -> Response:
    """The ledger rows the page's filters select, as ``GET /api/v1/credits/history.csv`` exports them
    (every matching row, newest first, streamed)."""
    filters = Filters()
    ledger = ledger_filter(filters, type, since, until)
    if filters.errors:
        raise InvalidDateRange("; ".join(f"{k}: {v}" for k, v in filters.errors.items()))
    return await csv_response(db, principal, ledger, None)


def _return_url(request: Request, settings: SettingsDep, query: str = "") -> str:
    return f"{base_url(request, settings).rstrip('/')}/app/credits{query}"


@router.post("/checkout")
async def start_checkout(
    request: Request, session: SessionDep, settings: SettingsDep, user: ManagerDep,
    form: Annotated[CheckoutForm, Form()],
) -> Response:
    """To Stripe Checkout for a plan's subscription or a credit pack (``form.price``)."""
    team = await accounts.get_team(session, user.team_id)
    url = await checkout.checkout_url(
        settings, team, price_id=form.price, email=user.email, success_url=_return_url(request, settings, "?checkout=done"),
        cancel_url=_return_url(request, settings, "?checkout=canceled"),
    )
    return RedirectResponse(url, status_code=303)


@router.post("/portal")
async def customer_portal(
    request: Request, session: SessionDep, settings: SettingsDep, user: ManagerDep, form: Annotated[WebForm, Form()],
) -> Response:
    """To Stripe's customer portal (cards, invoices, cancelling the subscription)."""
    team = await accounts.get_team(session, user.team_id)
    return RedirectResponse(await checkout.portal_url(settings, team, return_url=_return_url(request, settings)),
                            status_code=303)
