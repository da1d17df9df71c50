"""``POST /api/v1/webhooks/stripe``: payloads signed with a real secret exactly as Stripe signs
them (``t=<unix time>,v1=HMAC-SHA256(secret, "<t>.<body>")``, via the library's own helper), posted
through the ASGI app. The ledger check runs after each test's events."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import stripe
from sqlalchemy import text

from tests.billing.builders import balance_row, ledger_rows, set_due, team_row
from tests.builders import assert_ledger_ok, make_team

D = Decimal
SECRET = "whsec_pixelmint_test_5f2b1c"
URL = "/api/v1/webhooks/stripe"
DAY = 86400


@pytest.fixture
def stripe_api(api, settings):  # type: ignore[no-untyped-def]
    settings.stripe_webhook_secret = SECRET
    settings.stripe_price_plans = {"price_basic": "basic", "price_pro": "pro"}
    settings.stripe_price_credits = {"price_pack_100": D("100")}
    return api


def event(type_: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2025-03-31.basil",
        "created": created or int(time.time()), "livemode": False, "type": type_, "data": {"object": obj},
    }


def invoice(customer: str, *, price: str = "price_pro", period_end: int, subscription: str = "sub_1",
            team_id: uuid.UUID | None = None, reason: str = "subscription_cycle") -> dict[str, Any]:
    """An invoice as API versions since 2025-03-31 shape it (price and subscription under
    ``pricing`` / ``parent``); ``period_end`` of the invoice itself is the previous period's, as
    Stripe does for subscription invoices."""
    return {
        "id": f"in_{uuid.uuid4().hex[:14]}", "object": "invoice", "customer": customer, "billing_reason": reason,
        "status": "paid", "period_end": period_end - 30 * DAY,
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": subscription, "metadata": {"teamId": str(team_id)} if team_id else {}}},
        "lines": {"object": "list", "data": [{
            "id": "il_1", "object": "line_item", "amount": 2900, "metadata": {},
            "period": {"start": period_end - 30 * DAY, "end": period_end},
            "pricing": {"type": "price_details", "price_details": {"price": price, "product": "prod_1"}},
            "parent": {"type": "subscription_item_details", "subscription_item_details": {
                "subscription": subscription, "subscription_item": "si_1", "proration": False}},
        }]},
    }


def checkout(customer: str | None, **fields: Any) -> dict[str, Any]:
    return {"id": f"cs_test_{uuid.uuid4().hex[:14]}", "object": "checkout.session", "customer": customer,
            "mode": "payment", "payment_status": "paid", "metadata": {}, **fields}


def subscription(customer: str, *, price: str, status: str = "active", sub_id: str = "sub_1") -> dict[str, Any]:
    return {"id": sub_id, "object": "subscription", "customer": customer, "status": status, "metadata": {},
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price, "object": "price"}}]}}


async def post(api, payload: dict[str, Any] | str, *, secret: str = SECRET, timestamp: int | None = None):  # type: ignore[no-untyped-def]
    body = payload if isinstance(payload, str) else json.dumps(payload)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return await api.post(URL, content=body, headers={"Stripe-Signature": header, "content-type": "application/json"})


async def stored(db) -> list[Any]:  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return (await s.execute(text("SELECT id, type, outcome, team_id, customer_id FROM stripe_events ORDER BY received_at"))).all()


async def linked_team(db, plan: str = "basic", customer: str = "cus_1", **kw: Any):  # type: ignore[no-untyped-def]
    team = await make_team(db, plan=plan, **kw)
    async with db.transaction() as s:
        await s.execute(text("UPDATE teams SET stripe_customer_id = :c WHERE id = :t"), {"c": customer, "t": team.team_id})
    return team


async def test_disabled_without_a_secret(api, db) -> None:
    r = await post(api, event("invoice.payment_succeeded", {}))
    assert r.status_code == 503 and r.json()["error"] == "stripe_webhooks_disabled"
    assert "PIXELMINT_STRIPE_WEBHOOK_SECRET" in r.json()["message"]


async def test_bad_signatures_are_400_and_change_nothing(stripe_api, db) -> None:
    team = await make_team(db, plan="basic", credits="10")
    evt = event("checkout.session.completed", checkout("cus_1", client_reference_id=str(team.team_id),
                                                        metadata={"credits": "500"}))
    body = json.dumps(evt)
    attempts = [
        await post(stripe_api, evt, secret="whsec_someone_else"),
        await post(stripe_api, evt, timestamp=int(time.time()) - 3600),  # outside the 5-minute tolerance
        await stripe_api.post(URL, content=body, headers={"content-type": "application/json"}),  # unsigned
        await stripe_api.post(URL, content=body.replace("500", "900"), headers={  # signed, then tampered
            "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, SECRET)}),
        await stripe_api.post(URL, content=body, headers={"Stripe-Signature": "garbage"}),
    ]
    for r in attempts:
        assert r.status_code == 400 and r.json()["error"] == "invalid_signature", r.text
    assert await stored(db) == []
    assert (await balance_row(db, team.team_id)).bonus_credits == D("0.00")
    r = await post(stripe_api, "not json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_payload"


async def test_invoice_paid_renews_links_the_customer_and_sets_the_plan(stripe_api, db) -> None:
    team = await make_team(db, plan="basic", credits="120")
    period_end = int(time.time()) + 31 * DAY
    evt = event("invoice.payment_succeeded",
                invoice("cus_new", price="price_pro", period_end=period_end, team_id=team.team_id,
                        subscription="sub_9", reason="subscription_create"))
    r = await post(stripe_api, evt)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "eventId": evt["id"], "type": "invoice.payment_succeeded",
                        "duplicate": False, "outcome": "applied"}
    b = await balance_row(db, team.team_id)
    assert (b.allocation_credits, b.allocation_period) == (D("2000.00"), 1)
    assert b.next_replenishment_at == dt.datetime.fromtimestamp(period_end, dt.UTC)
    t = await team_row(db, team.team_id)
    assert (t.plan_code, t.stripe_customer_id, t.stripe_subscription_id, t.max_running) == ("pro", "cus_new", "sub_9", 3)
    *_, expire, renew = await ledger_rows(db, team.team_id)
    assert (expire.amount, renew.amount, renew.metadata["stripeEventId"]) == (D("120.00"), D("2000.00"), evt["id"])

    # Stripe delivers it again (a retry, signed anew): stored once, applied once, still 200.
    for _ in range(2):
        again = await post(stripe_api, evt)
        assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["outcome"] == "applied"
    assert (await balance_row(db, team.team_id)).allocation_period == 1
    assert [(e.id, e.outcome, e.team_id) for e in await stored(db)] == [(evt["id"], "applied", team.team_id)]

    # the next month's invoice (known customer now, no metadata needed)
    nxt = event("invoice.payment_succeeded", invoice("cus_new", price="price_pro", period_end=period_end + 30 * DAY,
                                                     subscription="sub_9"))
    assert (await post(stripe_api, nxt)).json()["outcome"] == "applied"
    assert (await balance_row(db, team.team_id)).allocation_period == 2
    # an invoice of an older period arriving late changes nothing
    old = event("invoice.payment_succeeded", invoice("cus_new", price="price_pro", period_end=period_end - 30 * DAY,
                                                     subscription="sub_9"))
    assert (await post(stripe_api, old)).json()["outcome"] == "ignored_stale_invoice"
    assert (await balance_row(db, team.team_id)).allocation_period == 2
    await assert_ledger_ok(db)


async def test_invoice_of_older_api_versions_and_unknown_prices(stripe_api, db) -> None:
    team = await linked_team(db, plan="pro", customer="cus_old")
    period_end = int(time.time()) + 40 * DAY
    legacy = invoice("cus_old", period_end=period_end)
    del legacy["parent"]
    legacy["subscription"] = "sub_legacy"
    line = legacy["lines"]["data"][0]
    del line["pricing"], line["parent"]
    line["price"] = {"id": "price_basic", "object": "price"}
    assert (await post(stripe_api, event("invoice.payment_succeeded", legacy))).json()["outcome"] == "applied"
    t = await team_row(db, team.team_id)
    assert (t.plan_code, t.stripe_subscription_id) == ("basic", "sub_legacy")
    assert (await balance_row(db, team.team_id)).allocation_credits == D("500.00")

    unknown = event("invoice.payment_succeeded", invoice("cus_old", price="price_mystery", period_end=period_end + DAY))
    assert (await post(stripe_api, unknown)).json()["outcome"] == "ignored_unknown_price"
    one_off = invoice("cus_old", period_end=period_end)
    del one_off["parent"], one_off["lines"]["data"][0]["parent"]
    assert (await post(stripe_api, event("invoice.payment_succeeded", one_off))).json()["outcome"] == \
        "ignored_not_subscription"
    assert (await balance_row(db, team.team_id)).allocation_period == 1
    await assert_ledger_ok(db)


async def test_checkout_credit_packs_are_bonus_credits(stripe_api, db) -> None:
    team = await make_team(db, plan="basic", credits="10")
    by_metadata = checkout("cus_pack", client_reference_id=str(team.team_id), metadata={"credits": "250"})
    r = await post(stripe_api, event("checkout.session.completed", by_metadata))
    assert r.json()["outcome"] == "applied"
    assert (await team_row(db, team.team_id)).stripe_customer_id == "cus_pack"
    by_price = checkout("cus_pack", metadata={"priceId": "price_pack_100"})
    assert (await post(stripe_api, event("checkout.session.completed", by_price))).json()["outcome"] == "applied"
    by_items = checkout("cus_pack", line_items={"object": "list", "data": [
        {"price": {"id": "price_pack_100"}, "quantity": 2}]})
    assert (await post(stripe_api, event("checkout.session.completed", by_items))).json()["outcome"] == "applied"
    b = await balance_row(db, team.team_id)
    assert (b.allocation_credits, b.bonus_credits) == (D("10.00"), D("550.00"))

    # paid later (bank debit): nothing at completion, the credits with async_payment_succeeded
    pending = checkout("cus_pack", payment_status="unpaid", metadata={"credits": "40"})
    assert (await post(stripe_api, event("checkout.session.completed", pending))).json()["outcome"] == "awaiting_payment"
    paid = {**pending, "payment_status": "paid"}
    r = await post(stripe_api, event("checkout.session.async_payment_succeeded", paid))
    assert r.json()["outcome"] == "applied"
    r = await post(stripe_api, event("checkout.session.async_payment_succeeded", paid))  # another event, same session
    assert r.json()["outcome"] == "ignored_already_granted"
    no_amount = checkout("cus_pack", metadata={"priceId": "price_unknown"})
    assert (await post(stripe_api, event("checkout.session.completed", no_amount))).json()["outcome"] == \
        "ignored_no_credits"
    subscribe = checkout("cus_pack", mode="subscription", subscription="sub_42")
    assert (await post(stripe_api, event("checkout.session.completed", subscribe))).json()["outcome"] == "linked"
    assert (await team_row(db, team.team_id)).stripe_subscription_id == "sub_42"

    b = await balance_row(db, team.team_id)
    assert b.bonus_credits == D("590.00")
    grants = [r for r in await ledger_rows(db, team.team_id) if r.metadata.get("source") == "stripe"]
    assert len(grants) == 4 and all(g.type == "grant" and g.bonus_delta > 0 for g in grants)
    await assert_ledger_ok(db)


async def test_subscription_updates_change_the_plan_in_order(stripe_api, db) -> None:
    team = await linked_team(db, plan="basic", customer="cus_s", credits="77")
    now = int(time.time())
    up = event("customer.subscription.updated", subscription("cus_s", price="price_pro"), created=now)
    assert (await post(stripe_api, up)).json()["outcome"] == "applied"
    t = await team_row(db, team.team_id)
    assert (t.plan_code, t.priority, t.max_running, t.stripe_subscription_id) == ("pro", 20, 3, "sub_1")
    assert (await balance_row(db, team.team_id)).allocation_credits == D("77.00")  # credits come with the invoice
    older = event("customer.subscription.updated", subscription("cus_s", price="price_basic"), created=now - 60)
    assert (await post(stripe_api, older)).json()["outcome"] == "ignored_out_of_order"
    assert (await team_row(db, team.team_id)).plan_code == "pro"
    same = event("customer.subscription.updated", subscription("cus_s", price="price_pro"), created=now + 1)
    assert (await post(stripe_api, same)).json()["outcome"] == "unchanged"
    await assert_ledger_ok(db)


async def test_subscription_deleted_downgrades_to_free(stripe_api, db) -> None:
    team = await linked_team(db, plan="pro", customer="cus_d", credits="300")
    async with db.transaction() as s:
        await s.execute(text("UPDATE teams SET stripe_subscription_id = 'sub_1' WHERE id = :t"), {"t": team.team_id})
    gone = event("customer.subscription.deleted", subscription("cus_d", price="price_pro", status="canceled"))
    assert (await post(stripe_api, gone)).json()["outcome"] == "applied"
    t = await team_row(db, team.team_id)
    assert (t.plan_code, t.stripe_subscription_id, t.priority, t.max_running) == ("free", None, 0, 1)
    assert (await balance_row(db, team.team_id)).allocation_credits == D("300.00")  # until the period ends
    # a late invoice of the deleted subscription does nothing
    late = event("invoice.payment_succeeded", invoice("cus_d", period_end=int(time.time()) + 60 * DAY))
    assert (await post(stripe_api, late)).json()["outcome"] == "ignored_subscription_ended"
    # at the period's end the schedule (no longer Stripe) expires the allocation
    from pixelmint.billing.replenishment import replenish_due

    await set_due(db, team.team_id, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    assert (await replenish_due(db)).teams == 1
    b = await balance_row(db, team.team_id)
    assert (b.allocation_credits, b.next_replenishment_at) == (D("0.00"), None)
    await assert_ledger_ok(db)


async def test_unknown_customers_and_types_are_stored_and_ignored(stripe_api, db) -> None:
    team = await make_team(db, plan="basic", credits="5")
    stranger = event("invoice.payment_succeeded", invoice("cus_nobody", period_end=int(time.time()) + 30 * DAY))
    r = await post(stripe_api, stranger)
    assert r.status_code == 200 and r.json()["outcome"] == "ignored_unknown_customer"
    bogus = event("checkout.session.completed", checkout("cus_x", client_reference_id="not-a-uuid",
                                                          metadata={"credits": "5"}))
    assert (await post(stripe_api, bogus)).json()["outcome"] == "ignored_unknown_customer"
    other = event("customer.created", {"id": "cus_2", "object": "customer"})
    assert (await post(stripe_api, other)).json()["outcome"] == "ignored_type"
    rows = await stored(db)
    assert [(e.id, e.outcome, e.team_id) for e in rows] == [
        (stranger["id"], "ignored_unknown_customer", None), (bogus["id"], "ignored_unknown_customer", None),
        (other["id"], "ignored_type", None)]
    assert rows[0].customer_id == "cus_nobody"
    assert [row.type for row in await ledger_rows(db, team.team_id)] == ["grant"]
    # a team already linked to another customer is not taken over
    await linked_team(db, customer="cus_owner")
    async with db.transaction() as s:
        owner = await s.scalar(text("SELECT id FROM teams WHERE stripe_customer_id = 'cus_owner'"))
    steal = event("checkout.session.completed", checkout("cus_thief", client_reference_id=str(owner),
                                                         metadata={"credits": "1000"}))
    assert (await post(stripe_api, steal)).json()["outcome"] == "ignored_unknown_customer"
    await assert_ledger_ok(db)


async def test_concurrent_duplicate_deliveries_apply_once(stripe_api, db) -> None:
    team = await linked_team(db, customer="cus_c", credits="1")
    evt = event("checkout.session.completed", checkout("cus_c", metadata={"credits": "60"}))
    replies = await asyncio.gather(*(post(stripe_api, evt) for _ in range(4)))
    assert sorted(r.json()["duplicate"] for r in replies) == [False, True, True, True]
    assert all(r.status_code == 200 and r.json()["outcome"] == "applied" for r in replies)
    assert (await balance_row(db, team.team_id)).bonus_credits == D("60.00")
    await assert_ledger_ok(db)
