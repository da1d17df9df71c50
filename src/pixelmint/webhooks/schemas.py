"""JSON shapes of the webhook endpoints API (camelCase)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field

from pixelmint.kit.schemas import CamelModel, RequestModel, UtcDatetime
from pixelmint.webhooks.service import EVENT_TYPES, MAX_URL_LENGTH

# Checked by the service with stable codes (invalid_webhook_url, invalid_event_type).
WebhookUrl = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH, json_schema_extra={"pattern": "^https?://"},
                                  description="An absolute http(s) URL without credentials.")]
EventTypes = Annotated[list[str], Field(max_length=len(EVENT_TYPES), json_schema_extra={"items": {"enum": list(EVENT_TYPES)}},
                                        description="The events to send; empty: all of them.")]
Description = Annotated[str, Field(max_length=500)]


class EndpointCreate(RequestModel):
    url: WebhookUrl
    event_types: EventTypes = []
    description: Description = ""


class EndpointPatch(RequestModel):
    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = None
    description: Description | None = None


class EndpointOut(CamelModel):
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    failing_since: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class EndpointWithSecret(EndpointOut):
    """An endpoint as created or after a rotation: the only answers that carry its secret."""

    secret: str = Field(description="The signing secret (whsec_…): shown only now.")
    previous_secret_expires_at: dt.datetime | None = Field(
        None, description="Until then the previous secret signs too (a second v1 signature).")


class EndpointPage(CamelModel):
    items: list[EndpointOut]
    next_cursor: str | None


class AttemptOut(CamelModel):
    attempt: int
    succeeded: bool
    status_code: int | None
    response: str | None = Field(description="The first KiB of the answer's body.")
    duration_ms: int
    error: str | None
    at: dt.datetime


class DeliveryOut(CamelModel):
    id: uuid.UUID
    message_id: uuid.UUID = Field(description="The event; webhook-id is msg_<its hex>.")
    event_type: str
    status: str = Field(description="pending | succeeded | failed")
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_response: str | None
    last_duration_ms: int | None
    last_error: str | None
    created_at: dt.datetime
    log: list[AttemptOut]


class DeliveryPage(CamelModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class ReplayIn(RequestModel):
    since: UtcDatetime = Field(description="Failed deliveries created at or after this instant are queued again.")


class ReplayOut(CamelModel):
    requeued: int
