"""Errors of the billing domain (rendered by ``api/errors.py`` like every ``PixelmintError``)."""

from __future__ import annotations

from pixelmint.kit.errors import Conflict, InvalidRequest, PixelmintError


class StripeWebhooksDisabled(PixelmintError):
    """503: ``PIXELMINT_STRIPE_WEBHOOK_SECRET`` is unset, so no event can be verified."""

    status_code = 503
    code = "stripe_webhooks_disabled"


class InvalidSignature(PixelmintError):
    """400: the ``Stripe-Signature`` header is missing, malformed, stale or does not match the
    body under the endpoint secret. Nothing was stored or changed."""

    status_code = 400
    code = "invalid_signature"


class InvalidPayload(PixelmintError):
    """400: a correctly signed body that is not a Stripe event (no JSON object with id and type)."""

    status_code = 400
    code = "invalid_payload"



class StripeNotConfigured(PixelmintError):
    """503: Stripe Checkout and the customer portal need ``PIXELMINT_STRIPE_SECRET_KEY``."""

    status_code = 503
    code = "stripe_not_configured"


class UnknownPrice(InvalidRequest):
    """422: a Checkout for a price that is neither a plan's (``PIXELMINT_STRIPE_PRICE_PLANS``) nor
    a credit pack's (``PIXELMINT_STRIPE_PRICE_CREDITS``)."""

    code = "unknown_price"


class NoStripeCustomer(Conflict):
    """409: the customer portal needs a Stripe customer, which a team gets with its first
    Checkout."""

    code = "no_stripe_customer"


class StripeRequestFailed(PixelmintError):
    """502: Stripe refused or did not answer a request (the message says what it said)."""

    status_code = 502
    code = "stripe_request_failed"
