"""The credits page: the balance buckets, the ledger with its filters and pages, the CSV download
(the same export as the API's), the usage chart's data, the plans; with Stripe configured, the
Checkout and portal requests against a local fake of Stripe's API (their parameters are what
``billing/stripe_events.py`` needs to credit the team: checked by feeding the resulting event to
it); without Stripe, the explanation that an administrator grants credits."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pixelmint.billing import stripe_events
from pixelmint.credits import service as credits
from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from pixelmint.web.templating import credits as shown
from tests.builders import assert_ledger_ok
from tests.providers.localserver import LocalServer
from tests.web.helpers import csrf, post_form
from tests.web.pages import generate, make_paying, signed_up_with_key, team_id


def ledger_types(html: str) -> list[str]:
    return re.findall(r'<tr data-type="(\w+)" data-id="\d+">', html)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_buckets_ledger_filters_csv_and_chart(api_with_worker: httpx.AsyncClient, db: Database) -> None:
    first_day = dt.datetime.now(dt.UTC).date()  # the rows below are made on this UTC day or the next
    api = api_with_worker
    key = await signed_up_with_key(api)
    await make_paying(db)
    job = await generate(api, key)
    charged = Decimal(str(job["chargedCredits"]))
    assert charged > 0

    page = await api.get("/app/credits")
    assert page.status_code == 200
    balance = (await api.get("/api/v1/credits/balance", headers=key)).json()
    assert f'id="allocation-credits">{shown(balance["allocationCredits"])}<' in page.text
    assert 'id="bonus-credits">0<' in page.text and 'id="reserved-credits">0<' in page.text
    assert ledger_types(page.text) == ["capture", "reserve", "replenish"]
    chart = json.loads(re.search(r"data-chart='([^']+)'", page.text).group(1))  # type: ignore[union-attr]
    assert sum(sum(d["data"]) for d in chart["data"]["datasets"]) == float(charged)
    assert 'id="no-payments"' in page.text and "pixelmint admin grant" in page.text
    assert 'aria-current="true" class="current-plan"' in page.text  # the plan comparison marks the team's

    # Filters: type, dates (whole UTC days), a bad date explained.
    assert ledger_types((await api.get("/app/credits?type=capture")).text) == ["capture"]
    today = dt.datetime.now(dt.UTC).date()
    assert len(ledger_types((await api.get(f"/app/credits?since={first_day}&until={today}")).text)) == 3
    assert ledger_types((await api.get(f"/app/credits?until={first_day - dt.timedelta(days=1)}")).text) == []
    bad = await api.get("/app/credits?since=soon&type=gift")
    assert "Use a date such as" in bad.text and "Choose one of" in bad.text
    partial = await api.get("/app/credits?type=reserve", headers={"HX-Request": "true"})
    assert "<html" not in partial.text and ledger_types(partial.text) == ["reserve"]
    assert 'id="allocation-credits"' not in partial.text  # the ledger block only
    assert 'href="/app/credits/history.csv?type=reserve"' in partial.text

    # The CSV: the same export as the API's, filtered alike.
    download = await api.get("/app/credits/history.csv?type=capture")
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"] == 'attachment; filename="credit-history.csv"'
    rows = parse_csv(download.text)
    assert [(r["type"], Decimal(r["amount"]), r["jobId"]) for r in rows] == [("capture", charged, job["id"])]
    everything = await api.get("/app/credits/history.csv")
    assert everything.text == (await api.get("/api/v1/credits/history.csv", headers=key)).text
    assert [r["type"] for r in parse_csv(everything.text)] == ["capture", "reserve", "replenish"]
    assert (await api.get("/app/credits/history.csv?since=soon")).status_code == 422
    await assert_ledger_ok(db)


async def test_the_ledger_pages(api: httpx.AsyncClient, db: Database) -> None:
    await signed_up_with_key(api)
    team = await team_id(db)
    async with db.transaction() as session:
        for n in range(55):
            await credits.grant(session, team_id=team, amount=Decimal(n + 1), bucket="bonus", ledger_type="grant",
                                description=f"gift {n + 1}")
    first = await api.get("/app/credits")
    assert len(ledger_types(first.text)) == 50 and "gift 55" in first.text and "gift 5<" not in first.text
    older = re.search(r'href="([^"]+)" rel="next"', first.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    second = await api.get(older)
    assert len(ledger_types(second.text)) == 5 and "gift 5<" in second.text and 'rel="next"' not in second.text


class FakeStripe:
    """Stripe's API for Checkout Sessions and portal sessions: records each request's form."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.app = Starlette(routes=[
            Route("/v1/checkout/sessions", self.checkout, methods=["POST"]),
            Route("/v1/billing_portal/sessions", self.portal, methods=["POST"]),
        ])

    async def _record(self, request: Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).multi_items()}
        self.requests.append((request.url.path, request.headers.get("authorization", ""), form))
        return form

    async def checkout(self, request: Request) -> JSONResponse:
        form = await self._record(request)
        number = len(self.requests)
        return JSONResponse({"id": f"cs_test_{number}", "object": "checkout.session", "mode": form.get("mode"),
                             "url": f"https://checkout.stripe.test/c/pay/cs_test_{number}"})

    async def portal(self, request: Request) -> JSONResponse:
        form = await self._record(request)
        return JSONResponse({"id": "bps_1", "object": "billing_portal.session", "customer": form.get("customer"),
                             "url": "https://billing.stripe.test/p/session/bps_1"})


@pytest.fixture
def fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    with LocalServer(fake.app) as server:
        yield fake, server.url


def configure_stripe(settings: Settings, base: str) -> None:
    settings.stripe_secret_key = SecretStr("sk_test_pixelmint")
    settings.stripe_api_base = base
    settings.stripe_price_plans = {"price_pro_monthly": "pro"}
    settings.stripe_price_credits = {"price_pack_500": Decimal("500"), "price_pack_100": Decimal("100")}


def checkout_event(params: dict[str, str], *, customer: str) -> dict[str, Any]:
    """The ``checkout.session.completed`` event Stripe would send for a paid session created with
    ``params`` (only what Stripe copies from the request)."""
    metadata = {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[")}
    return {
        "id": "evt_checkout_1", "type": "checkout.session.completed", "created": 1_800_000_000, "livemode": False,
        "data": {"object": {
            "id": "cs_test_1", "object": "checkout.session", "mode": params["mode"], "payment_status": "paid",
            "customer": customer, "client_reference_id": params.get("client_reference_id"), "metadata": metadata,
        }},
    }


async def test_stripe_checkout_and_portal_against_a_fake(
    api: httpx.AsyncClient, db: Database, settings: Settings, fake_stripe: tuple[FakeStripe, str],
) -> None:
    fake, base = fake_stripe
    configure_stripe(settings, base)
    await signed_up_with_key(api)
    team = await team_id(db)
    page = await api.get("/app/credits")
    assert 'data-pack="price_pack_100"' in page.text and "Buy 500 credits" in page.text
    assert 'data-plan="pro"' in page.text and 'id="no-payments"' not in page.text
    assert 'id="portal"' not in page.text  # no Stripe customer yet

    # A credit pack: Checkout in payment mode, the team and the credits in the metadata.
    pack = await post_form(api, "/app/credits/checkout", {"price": "price_pack_500"})
    assert pack.status_code == 303 and pack.headers["location"] == "https://checkout.stripe.test/c/pay/cs_test_1"
    path, authorization, params = fake.requests[-1]
    assert path == "/v1/checkout/sessions" and authorization == "Bearer sk_test_pixelmint"
    assert params == {
        "mode": "payment", "line_items[0][price]": "price_pack_500", "line_items[0][quantity]": "1",
        "client_reference_id": str(team), "metadata[teamId]": str(team), "metadata[priceId]": "price_pack_500",
        "metadata[credits]": "500", "customer_email": "ada@example.com", "customer_creation": "always",
        "success_url": params["success_url"], "cancel_url": params["cancel_url"],
    }
    assert params["success_url"].endswith("/app/credits?checkout=done")
    assert params["cancel_url"].endswith("/app/credits?checkout=canceled")

    # The webhook for that session credits this team (and links the customer).
    async with db.transaction() as session:
        config = stripe_events.StripeConfig(dict(settings.stripe_price_plans), dict(settings.stripe_price_credits))
        result = await stripe_events.handle_event(session, checkout_event(params, customer="cus_ada"), config)
    assert (result.outcome, result.team_id) == ("applied", team)
    page = await api.get("/app/credits?checkout=done")
    assert 'id="bonus-credits">500<' in page.text and 'id="checkout-done"' in page.text
    assert ledger_types(page.text)[0] == "grant"

    # A subscription for a plan: the known customer now, the team on the subscription too.
    upgrade = await post_form(api, "/app/credits/checkout", {"price": "price_pro_monthly"})
    assert upgrade.status_code == 303
    _, _, params = fake.requests[-1]
    assert params["mode"] == "subscription" and params["customer"] == "cus_ada"
    assert params["subscription_data[metadata][teamId]"] == str(team) and params["client_reference_id"] == str(team)
    assert "customer_email" not in params and "customer_creation" not in params

    # The customer portal.
    assert 'id="portal"' in (await api.get("/app/credits")).text
    portal = await post_form(api, "/app/credits/portal")
    assert portal.status_code == 303 and portal.headers["location"] == "https://billing.stripe.test/p/session/bps_1"
    path, _, params = fake.requests[-1]
    assert path == "/v1/billing_portal/sessions" and params["customer"] == "cus_ada"
    assert params["return_url"].endswith("/app/credits")

    # Refusals: an unknown price (nothing sent to Stripe), a post without the CSRF token.
    sent = len(fake.requests)
    unknown = await post_form(api, "/app/credits/checkout", {"price": "price_elsewhere"})
    assert unknown.status_code == 422 and "not a price" in unknown.text
    await csrf(api)
    assert (await api.post("/app/credits/checkout", data={"price": "price_pack_100"})).status_code == 403
    assert len(fake.requests) == sent
    await assert_ledger_ok(db)


async def test_without_stripe_the_payment_routes_say_so(api: httpx.AsyncClient) -> None:
    await signed_up_with_key(api)
    answer = await post_form(api, "/app/credits/checkout", {"price": "price_pack_100"})
    assert answer.status_code == 503 and "<html" in answer.text and "PIXELMINT_STRIPE_SECRET_KEY" in answer.text
