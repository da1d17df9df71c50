"""``POST /api/v1/webhooks/stripe``: Stripe events, verified with the endpoint secret.

No API key: the ``Stripe-Signature`` header is the authentication. 503
``stripe_webhooks_disabled`` while ``PIXELMINT_STRIPE_WEBHOOK_SECRET`` is unset; 400
``invalid_signature`` (nothing stored) for a bad, missing or stale signature; otherwise 200 with
``{"received": true, "eventId", "type", "duplicate", "outcome"}`` — for a replayed or duplicated
event too (``duplicate: true``, nothing done), so Stripe stops retrying. What each event does is in
``billing/stripe_events.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import SecretStr

from pixelmint.billing import stripe_events
from pixelmint.billing.errors import InvalidPayload, InvalidSignature, StripeWebhooksDisabled
from pixelmint.billing.schemas import StripeWebhookOut
from pixelmint.kit.errors import responses
from pixelmint.kit.http import SessionDep, SettingsDep

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


@router.post(
    "/stripe", response_model=StripeWebhookOut, summary="Stripe webhook endpoint",
    responses=responses(InvalidSignature, InvalidPayload, StripeWebhooksDisabled),
)
async def stripe_webhook(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> StripeWebhookOut:
    configured = settings.stripe_webhook_secret
    secret = configured.get_secret_value() if isinstance(configured, SecretStr) else configured
    if not secret:
        raise StripeWebhooksDisabled(
            "Stripe webhooks are disabled: set PIXELMINT_STRIPE_WEBHOOK_SECRET to the endpoint's signing secret."
        )
    event = stripe_events.verify(
        await request.body(), stripe_signature, secret, tolerance=settings.stripe_webhook_tolerance_seconds
    )
    config = stripe_events.StripeConfig(
        price_plans=dict(settings.stripe_price_plans), price_credits=dict(settings.stripe_price_credits)
    )
    result = await stripe_events.handle_event(session, event, config)
    return StripeWebhookOut(event_id=result.event_id, type=result.type, duplicate=result.duplicate, outcome=result.outcome)
