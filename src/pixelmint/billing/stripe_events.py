"""Stripe webhooks: verify, store once, apply once.

``verify`` checks the ``Stripe-Signature`` header with the official library
(``stripe.Webhook.construct_event``: HMAC-SHA256 of ``"{t}.{body}"`` under the endpoint secret,
timestamp within the tolerance). ``handle_event`` then, in the caller's transaction:

1. ``INSERT INTO stripe_events … ON CONFLICT (id) DO NOTHING``: a replayed or duplicated event
   (same id) inserts nothing and is answered as a duplicate without doing anything. Two copies
   arriving at once serialise on the unique key: the second waits for the first to commit, then
   finds it.
2. Applies the event and records the outcome on the stored row, before the caller commits. If
   applying fails unexpectedly the whole transaction (the stored row too) rolls back, the
   endpoint answers 500 and Stripe delivers the event again later.

Events and what they do (``outcome`` ``applied`` unless said otherwise):

- ``invoice.payment_succeeded`` of a subscription — renewal: the plan comes from the price of
  the invoice's subscription line (``PIXELMINT_STRIPE_PRICE_PLANS``: price id → plan code; among
  mapped lines with a non-negative amount, the one whose period ends last, so a proration
  invoice of an upgrade picks the new price). The team moves to that plan if needed, is
  replenished to the plan's monthly credits (the allocation left expires) and
  ``next_replenishment_at`` becomes that line's period end. An invoice whose period ends before
  the team's ``next_replenishment_at`` is an older period arriving late (``ignored_stale_invoice``;
  not for the first invoice of a subscription, ``billing_reason`` ``subscription_create``);
  one of a subscription that was already deleted is ``ignored_subscription_ended``. Invoices
  without a subscription are ``ignored_not_subscription``.
- ``checkout.session.completed`` (and ``checkout.session.async_payment_succeeded``) in
  ``payment`` mode, paid — a credit pack: bonus credits (they persist), the amount from the
  session's ``metadata.credits``, else from ``PIXELMINT_STRIPE_PRICE_CREDITS`` (price id →
  credits) for ``metadata.priceId`` or the (expanded) ``line_items`` × quantity. Unpaid (an
  asynchronous payment method) is ``awaiting_payment``: the ``async_payment_succeeded`` event
  grants. A session already granted is ``ignored_already_granted``. In ``subscription`` mode it
  only links the customer and the subscription (``linked``); the invoice brings the credits.
- ``customer.subscription.created`` / ``.updated`` — the plan follows the subscription's price
  (``unchanged`` when it already does); a ``canceled`` or ``incomplete_expired`` status acts like
  ``.deleted``; ``incomplete`` waits (``ignored_incomplete``). Credits wait for the invoice.
- ``customer.subscription.deleted`` — downgrade to ``free``; the subscription is forgotten, so
  the self-hosted replenishment task takes the team over: at its ``next_replenishment_at`` the
  allocation expires (a free plan gets 0) and nothing more is scheduled.
- Subscription events older (by the event's ``created``) than one already applied for the same
  customer are ``ignored_out_of_order`` (Stripe does not guarantee delivery order).
- Any other type is stored as ``ignored_type``.

The team: the one whose ``teams.stripe_customer_id`` is the event's customer; else the team named
by ``metadata.teamId`` (of the object, or of the invoice's subscription details or lines) or the
checkout session's ``client_reference_id``, which is then linked to the customer. An event for a
customer linked to no team and naming none is stored as ``ignored_unknown_customer`` and logged.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts import service as accounts
from pixelmint.accounts.tables import Team
from pixelmint.billing import service as billing
from pixelmint.billing.errors import InvalidPayload, InvalidSignature
from pixelmint.credits import service as credits
from pixelmint.kit.errors import InvalidRequest, NotFound

log = structlog.get_logger(__name__)

FREE_PLAN = "free"
APPLIED_OUTCOMES = ("applied", "unchanged")


@dataclass(frozen=True)
class StripeConfig:
    """Price ids → plan codes (subscriptions) and → credits (credit packs)."""

    price_plans: dict[str, str]
    price_credits: dict[str, Decimal]


@dataclass(frozen=True)
class EventResult:
    event_id: str
    type: str
    duplicate: bool
    outcome: str
    team_id: uuid.UUID | None = None
    detail: str | None = None


def verify(payload: bytes, signature: str | None, secret: str, *, tolerance: int = 300) -> dict[str, Any]:
    """The event (parsed JSON) if ``signature`` (the ``Stripe-Signature`` header) is valid for
    ``payload`` (the raw body) under ``secret``. Raises ``InvalidSignature`` (400) otherwise,
    ``InvalidPayload`` (400) for a signed body that is not an event."""
    import stripe  # imported on first use: the library is large

    try:
        stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance)
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(f"Stripe signature verification failed: {exc.user_message or exc}") from None
    except ValueError:
        raise InvalidPayload("The signed body is not a JSON Stripe event.") from None
    event = json.loads(payload)
    if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
        raise InvalidPayload("The signed body is not a Stripe event (it needs an id and a type).")
    return event


_STORE = text("""
INSERT INTO stripe_events (id, type, livemode, event_created, customer_id, payload)
VALUES (:id, :type, :livemode, :created, :customer, CAST(:payload AS jsonb))
ON CONFLICT (id) DO NOTHING
RETURNING id
""")


async def handle_event(session: AsyncSession, event: dict[str, Any], config: StripeConfig) -> EventResult:
    """Store ``event`` (a verified Stripe event) and apply it, exactly once (see the module doc).
    Returns what happened; the caller commits."""
    obj = _object(event)
    customer = _id(obj.get("customer"))
    created = dt.datetime.fromtimestamp(int(event.get("created") or 0), dt.UTC)
    stored = await session.scalar(_STORE, {
        "id": event["id"], "type": event["type"], "livemode": bool(event.get("livemode")), "created": created,
        "customer": customer, "payload": json.dumps(event),
    })
    if stored is None:
        outcome = await session.scalar(text("SELECT outcome FROM stripe_events WHERE id = :id"), {"id": event["id"]})
        log.info("stripe_event_duplicate", event_id=event["id"], type=event["type"])
        return EventResult(event["id"], event["type"], True, outcome or "received")
    handler = _HANDLERS.get(event["type"])
    detail: str | None
    if handler is None:
        outcome, team, detail = "ignored_type", None, f"{event['type']} is not handled"
    else:
        ctx = _Context(session, event, obj, customer, created, config)
        outcome, team, detail = await handler(ctx)
    await session.execute(
        text("UPDATE stripe_events SET outcome = :outcome, detail = :detail, team_id = :team WHERE id = :id"),
        {"outcome": outcome, "detail": detail[:1000] if detail else None,
         "team": team.id if team is not None else None, "id": event["id"]},
    )
    level = log.warning if outcome.startswith("ignored_unknown") else log.info
    level("stripe_event", event_id=event["id"], type=event["type"], customer=customer, outcome=outcome,
          team=str(team.id) if team is not None else None, detail=detail)
    return EventResult(event["id"], event["type"], False, outcome, team.id if team is not None else None, detail)


# ---------------------------------------------------------------------------------------------
# Reading Stripe objects (dicts; fields of both older and newer API versions)


def _object(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def _id(value: Any) -> str | None:
    """An id field that may be expanded into an object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _lines(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    lines = _get(invoice, "lines", "data")
    return [line for line in lines if isinstance(line, dict)] if isinstance(lines, list) else []


def _line_price(line: dict[str, Any]) -> str | None:
    # Newer API versions: pricing.price_details.price; older: price.id or plan.id.
    return _id(_get(line, "pricing", "price_details", "price")) or _id(line.get("price")) or _id(line.get("plan"))


def _invoice_subscription(invoice: dict[str, Any]) -> str | None:
    found = _id(invoice.get("subscription")) or _id(_get(invoice, "parent", "subscription_details", "subscription"))
    for line in _lines(invoice):
        found = found or _id(line.get("subscription")) or _id(
            _get(line, "parent", "subscription_item_details", "subscription")
        )
    return found


def _team_hints(obj: dict[str, Any]) -> list[str]:
    """Team ids the object names: ``metadata.teamId`` (object, subscription details, lines) and
    a checkout session's ``client_reference_id``."""
    candidates = [
        _get(obj, "metadata", "teamId"),
        obj.get("client_reference_id"),
        _get(obj, "subscription_details", "metadata", "teamId"),
        _get(obj, "parent", "subscription_details", "metadata", "teamId"),
        *(_get(line, "metadata", "teamId") for line in _lines(obj)),
    ]
    return [c for c in candidates if isinstance(c, str) and c]


def _credits(value: Any) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        return None
    return amount


# ---------------------------------------------------------------------------------------------
# Handlers: each returns (outcome, team or None, detail)

Outcome = tuple[str, Team | None, str | None]


@dataclass
class _Context:
    session: AsyncSession
    event: dict[str, Any]
    obj: dict[str, Any]
    customer: str | None
    created: dt.datetime
    config: StripeConfig

    @property
    def metadata(self) -> dict[str, Any]:
        return {"source": "stripe", "stripeEventId": self.event["id"], "stripeEventType": self.event["type"]}

    async def team(self) -> tuple[Team | None, str | None]:
        """The event's team (locked), linking the customer on first sight; or (None, why)."""
        if self.customer is not None:
            team = await accounts.team_for_stripe_customer(self.session, self.customer)
            if team is not None:
                return team, None
        for hint in _team_hints(self.obj):
            try:
                team = await accounts.get_team(self.session, uuid.UUID(hint), for_update=True)
            except (ValueError, NotFound):
                continue
            if self.customer is None or team.stripe_customer_id == self.customer:
                return team, None
            if team.stripe_customer_id is None:
                await accounts.link_stripe_customer(self.session, team, self.customer)
                return team, None
            return None, f"team {team.id} is linked to another Stripe customer"
        return None, f"no team is linked to customer {self.customer} and the event names none"

    async def superseded(self) -> bool:
        """A subscription event newer than this one was already applied for this customer."""
        return bool(await self.session.scalar(
            text("""SELECT EXISTS (SELECT 1 FROM stripe_events
                                    WHERE customer_id = :customer AND id <> :id
                                      AND type IN ('customer.subscription.created', 'customer.subscription.updated',
                                                   'customer.subscription.deleted')
                                      AND event_created > :created AND outcome IN ('applied', 'unchanged'))"""),
            {"customer": self.customer, "id": self.event["id"], "created": self.created},
        ))


def _unknown(why: str | None) -> Outcome:
    return "ignored_unknown_customer", None, why


async def _invoice_paid(ctx: _Context) -> Outcome:
    invoice = ctx.obj
    subscription = _invoice_subscription(invoice)
    if subscription is None:
        return "ignored_not_subscription", None, f"invoice {invoice.get('id')} has no subscription"
    team, why = await ctx.team()
    if team is None:
        return _unknown(why)
    ended = await ctx.session.scalar(
        text("""SELECT EXISTS (SELECT 1 FROM stripe_events
                                WHERE customer_id = :customer AND type = 'customer.subscription.deleted'
                                  AND payload #>> '{data,object,id}' = :subscription)"""),
        {"customer": ctx.customer, "subscription": subscription},
    )
    if ended:
        return "ignored_subscription_ended", team, f"subscription {subscription} was deleted"
    mapped = [
        line for line in _lines(invoice)
        if _line_price(line) in ctx.config.price_plans and int(line.get("amount") or 0) >= 0
    ]
    if not mapped:
        prices = sorted({p for p in map(_line_price, _lines(invoice)) if p})
        return "ignored_unknown_price", team, f"no line's price is in PIXELMINT_STRIPE_PRICE_PLANS: {prices}"
    line = max(mapped, key=lambda ln: int(_get(ln, "period", "end") or 0))
    period_end = _get(line, "period", "end") or invoice.get("period_end")
    if not period_end:
        return "ignored_no_period", team, "the subscription line has no period end"
    next_at = dt.datetime.fromtimestamp(int(period_end), dt.UTC)
    try:
        plan = await accounts.get_plan(ctx.session, ctx.config.price_plans[_line_price(line)])  # type: ignore[index]
    except InvalidRequest as exc:
        return "ignored_unknown_plan", team, exc.message
    current = await ctx.session.scalar(
        text("SELECT next_replenishment_at FROM credit_balances WHERE team_id = :t FOR UPDATE"), {"t": team.id}
    )
    first = invoice.get("billing_reason") == "subscription_create"
    if current is not None and next_at < current and not first:
        if team.stripe_subscription_id is None:  # Stripe bills the team from now on, not the schedule
            await accounts.set_stripe_subscription(ctx.session, team, subscription)
        return "ignored_stale_invoice", team, f"period ends {next_at.isoformat()}, before {current.isoformat()}"
    await credits.replenish(
        ctx.session, team_id=team.id, amount=plan.monthly_credits, next_replenishment_at=next_at,
        reason=f"Stripe renewal ({plan.code} plan), invoice {invoice.get('id')}",
        metadata={**ctx.metadata, "invoiceId": invoice.get("id"), "plan": plan.code, "subscriptionId": subscription},
    )
    if team.stripe_subscription_id != subscription:
        await accounts.set_stripe_subscription(ctx.session, team, subscription)
    if team.plan_code != plan.code:
        await billing.switch_plan(ctx.session, team_id=team.id, plan_code=plan.code)
    return "applied", team, f"replenished {plan.monthly_credits} ({plan.code}) until {next_at.isoformat()}"


async def _checkout_completed(ctx: _Context) -> Outcome:
    checkout = ctx.obj
    team, why = await ctx.team()
    if team is None:
        return _unknown(why)
    mode = checkout.get("mode")
    if mode == "subscription":
        subscription = _id(checkout.get("subscription"))
        if subscription and team.stripe_subscription_id != subscription:
            await accounts.set_stripe_subscription(ctx.session, team, subscription)
        return "linked", team, f"subscription {subscription}; credits come with its invoice"
    if mode != "payment":
        return "ignored_mode", team, f"checkout mode {mode!r}"
    if checkout.get("payment_status") not in ("paid", "no_payment_required"):
        return "awaiting_payment", team, f"payment_status {checkout.get('payment_status')!r}"
    amount = _credits(_get(checkout, "metadata", "credits"))
    if amount is None:
        amount = _pack_credits(checkout, ctx.config)
    if amount is None:
        return ("ignored_no_credits", team,
                "neither metadata.credits nor a price in PIXELMINT_STRIPE_PRICE_CREDITS gives the credits")
    session_id = checkout.get("id")
    granted = await ctx.session.scalar(
        text("""SELECT id FROM credit_transactions
                 WHERE team_id = :t AND type = 'grant' AND metadata->>'checkoutSessionId' = :s LIMIT 1"""),
        {"t": team.id, "s": session_id},
    )
    if granted is not None:
        return "ignored_already_granted", team, f"ledger entry {granted}"
    await credits.grant(
        ctx.session, team_id=team.id, amount=amount, bucket="bonus", ledger_type="grant",
        description=f"credit pack (Stripe checkout {session_id})",
        metadata={**ctx.metadata, "checkoutSessionId": session_id},
    )
    return "applied", team, f"granted {amount} bonus credits"


def _pack_credits(checkout: dict[str, Any], config: StripeConfig) -> Decimal | None:
    price = _get(checkout, "metadata", "priceId")
    if isinstance(price, str) and price in config.price_credits:
        return config.price_credits[price]
    items = _get(checkout, "line_items", "data")
    total = Decimal("0")
    for item in items if isinstance(items, list) else []:
        price = _id(_get(item, "price"))
        if price in config.price_credits:
            total += config.price_credits[price] * int(item.get("quantity") or 1)
    return total if total > 0 else None


async def _subscription_changed(ctx: _Context) -> Outcome:
    subscription = ctx.obj
    status = subscription.get("status")
    if status in ("canceled", "incomplete_expired"):
        return await _subscription_deleted(ctx)
    team, why = await ctx.team()
    if team is None:
        return _unknown(why)
    if await ctx.superseded():
        return "ignored_out_of_order", team, "a newer subscription event was already applied"
    if status == "incomplete":
        return "ignored_incomplete", team, "the first payment has not succeeded yet"
    items = _get(subscription, "items", "data")
    prices = [_id(_get(item, "price")) for item in items] if isinstance(items, list) else []
    plans = [ctx.config.price_plans[p] for p in prices if p in ctx.config.price_plans]
    if not plans:
        return "ignored_unknown_price", team, f"no price is in PIXELMINT_STRIPE_PRICE_PLANS: {prices}"
    if team.stripe_subscription_id != subscription.get("id"):
        await accounts.set_stripe_subscription(ctx.session, team, subscription.get("id"))
    if team.plan_code == plans[0]:
        return "unchanged", team, f"already on {plans[0]}"
    try:
        change = await billing.switch_plan(ctx.session, team_id=team.id, plan_code=plans[0])
    except InvalidRequest as exc:
        return "ignored_unknown_plan", team, exc.message
    return "applied", team, f"plan {change.previous_plan} → {change.plan.code}"


async def _subscription_deleted(ctx: _Context) -> Outcome:
    subscription_id = ctx.obj.get("id")
    team, why = await ctx.team()
    if team is None:
        return _unknown(why)
    if await ctx.superseded():
        return "ignored_out_of_order", team, "a newer subscription event was already applied"
    if team.stripe_subscription_id not in (None, subscription_id):
        return "ignored_other_subscription", team, f"the team's subscription is {team.stripe_subscription_id}"
    await accounts.set_stripe_subscription(ctx.session, team, None)
    previous = team.plan_code
    if previous != FREE_PLAN:
        await billing.switch_plan(ctx.session, team_id=team.id, plan_code=FREE_PLAN)
    return "applied", team, f"plan {previous} → {FREE_PLAN}; the allocation expires at the next replenishment"


_HANDLERS = {
    "invoice.payment_succeeded": _invoice_paid,
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_deleted,
}
