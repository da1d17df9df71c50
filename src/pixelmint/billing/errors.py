"""Errors of the billing domain (rendered by ``api/errors.py`` like every ``PixelmintError``)."""

from __future__ import annotations

from pixelmint.kit.errors import PixelmintError


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

