"""Paying through Stripe from the dashboard: Checkout Sessions (a plan's subscription, or a credit
pack paid once) and the customer portal (cards, invoices, cancelling).

Both need ``PIXELMINT_STRIPE_SECRET_KEY``; ``PIXELMINT_STRIPE_API_BASE`` points the client
elsewhere than ``https://api.stripe.com`` (stripe-mock, a test fake). The offers come from the
settings the webhook handler already reads: ``PIXELMINT_STRIPE_PRICE_PLANS`` (price id → plan
code: a subscription) and ``PIXELMINT_STRIPE_PRICE_CREDITS`` (price id → credits: a pack).

What ``billing/stripe_events.py`` needs to credit the team is set on every session:
``client_reference_id`` and ``metadata.teamId`` (the team), the team's ``customer`` once it has
one (else ``customer_email``, and in payment mode ``customer_creation=always`` so that the portal
works afterwards), for a pack ``metadata.credits`` and ``metadata.priceId``, for a subscription
``subscription_data.metadata.teamId`` (its invoices then name the team too).

Sources: https://docs.stripe.com/api/checkout/sessions/create,
https://docs.stripe.com/api/customer_portal/sessions/create.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from pixelmint.accounts.tables import Team
from pixelmint.billing.errors import NoStripeCustomer, StripeNotConfigured, StripeRequestFailed, UnknownPrice
from pixelmint.settings import Settings


@dataclass(frozen=True)
class Offers:
    """What can be bought: plan code → its subscription price id; credit packs as (price id,
    credits), smallest first."""

    plans: dict[str, str]
    packs: list[tuple[str, Decimal]]


def enabled(settings: Settings) -> bool:
    return _secret(settings) is not None


def offers(settings: Settings) -> Offers:
    plans: dict[str, str] = {}
    for price, plan in settings.stripe_price_plans.items():
        plans.setdefault(plan, price)
    packs = sorted(settings.stripe_price_credits.items(), key=lambda item: (item[1], item[0]))
    return Offers(plans, packs)


def _secret(settings: Settings) -> str | None:
    key = settings.stripe_secret_key
    value = key.get_secret_value() if isinstance(key, SecretStr) else key
    return value or None


def _client(settings: Settings) -> Any:
    import stripe  # imported on first use: the library is large

    key = _secret(settings)
    if key is None:
        raise StripeNotConfigured("Payments are not set up on this server (PIXELMINT_STRIPE_SECRET_KEY).")
    return stripe.StripeClient(
        key, base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else {},
        http_client=stripe.HTTPXClient(), max_network_retries=1,
    )


async def _call(request: Any) -> Any:
    import stripe

    try:
        return await request
    except stripe.StripeError as exc:
        raise StripeRequestFailed(f"Stripe did not accept the request: {exc.user_message or exc}") from None


async def checkout_url(
    settings: Settings, team: Team, *, price_id: str, email: str | None, success_url: str, cancel_url: str,
) -> str:
    """A Checkout Session for ``price_id`` (a plan's price: ``subscription`` mode; a pack's:
    ``payment`` mode); the URL to send the person to. Raises ``UnknownPrice`` (422),
    ``StripeNotConfigured`` (503), ``StripeRequestFailed`` (502)."""
    client = _client(settings)
    team_id = str(team.id)
    metadata = {"teamId": team_id, "priceId": price_id}
    params: dict[str, Any] = {
        "line_items": [{"price": price_id, "quantity": 1}], "success_url": success_url, "cancel_url": cancel_url,
        "client_reference_id": team_id,
    }
    if price_id in settings.stripe_price_plans:
        params["mode"] = "subscription"
        params["subscription_data"] = {"metadata": {"teamId": team_id}}
    elif price_id in settings.stripe_price_credits:
        params["mode"] = "payment"
        metadata["credits"] = str(settings.stripe_price_credits[price_id])
    else:
        raise UnknownPrice(f"{price_id!r} is not a price of a plan or a credit pack.", field="price")
    params["metadata"] = metadata
    if team.stripe_customer_id:
        params["customer"] = team.stripe_customer_id
    else:
        if email:
            params["customer_email"] = email
        if params["mode"] == "payment":
            params["customer_creation"] = "always"
    session = await _call(client.v1.checkout.sessions.create_async(params))
    return str(session.url)


async def portal_url(settings: Settings, team: Team, *, return_url: str) -> str:
    """A customer portal session for the team's Stripe customer; its URL. Raises
    ``NoStripeCustomer`` (409), ``StripeNotConfigured`` (503), ``StripeRequestFailed`` (502)."""
    if not team.stripe_customer_id:
        raise NoStripeCustomer("This team has no Stripe customer yet: it gets one with its first purchase.")
    client = _client(settings)
    session = await _call(client.v1.billing_portal.sessions.create_async(
        {"customer": team.stripe_customer_id, "return_url": return_url}
    ))
    return str(session.url)
