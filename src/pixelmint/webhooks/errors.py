"""The webhooks errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import InvalidRequest, NotFound


class WebhookEndpointNotFound(NotFound):
    """404: the team has no webhook endpoint with that id."""

    code = "webhook_endpoint_not_found"


class WebhookDeliveryNotFound(NotFound):
    """404: the endpoint has no delivery with that id."""

    code = "webhook_delivery_not_found"


class InvalidWebhookUrl(InvalidRequest):
    """422: the URL is not an absolute http(s) URL without credentials, or is too long."""

    code = "invalid_webhook_url"


class WebhookUrlNotAllowed(InvalidRequest):
    """422: the URL's host resolves to a private, loopback or otherwise non-global address (SSRF
    guard, ``kit/netguard.py``); ``PIXELMINT_ALLOW_PRIVATE_URLS`` allows them."""

    code = "webhook_url_not_allowed"


class InvalidEventType(InvalidRequest):
    """422: an event type in ``eventTypes`` is not one Pixelmint sends."""

    code = "invalid_event_type"
