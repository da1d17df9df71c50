"""Outbound webhooks (Standard Webhooks): endpoints per team, events written as an outbox in the
caller's transaction, the delivery log, resend and replay.

Events (``EVENT_TYPES``) are emitted by the domains where the change happens, in the same
transaction: ``jobs/queue.py`` when a job finishes (``job.*``), ``custom_models/service.py`` when a
training ends (``model.*``), ``credits/service.py`` when a balance crosses the team's low-balance
threshold or is replenished (``credits.*``). ``emit`` writes the message and one ``pending``
delivery per matching enabled endpoint in ONE statement, and writes nothing when the team has no
such endpoint; a rolled-back change therefore emits nothing, and a committed one is delivered
even if the process dies right after (``webhooks/delivery.py`` sends what is pending).

Ad-hoc targets: ``emit_to_url`` queues a body (sent as it is) to a URL given with a request (the
``webhook`` of a Replicate-compatible prediction, queued by ``compat/replicate`` when its job
starts or finishes), signed with the team's default signing secret (``default_secret``:
Replicate's ``GET /v1/webhooks/default/secret``).

Payloads of team events are ``{"type", "timestamp", "data"}`` (the Standard Webhooks
recommendation), with ids and API paths in ``data``, never image bytes.

Services take the caller's session and never commit.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.kit import netguard
from pixelmint.webhooks.errors import (
    InvalidEventType,
    InvalidWebhookUrl,
    WebhookDeliveryNotFound,
    WebhookEndpointNotFound,
    WebhookUrlNotAllowed,
)
from pixelmint.webhooks.tables import WebhookAttempt, WebhookDelivery, WebhookEndpoint

CHANNEL = "pixelmint_webhooks"  # payload-free NOTIFY: deliveries may be due

EVENT_TYPES = (
    "job.succeeded", "job.failed", "job.canceled",
    "model.ready", "model.failed",
    "credits.low_balance", "credits.replenished",
)
MAX_URL_LENGTH = 2048


def new_secret() -> str:
    """A Standard Webhooks symmetric secret: ``whsec_`` + base64 of 32 random bytes (the spec
    asks for 24–64; the ``standardwebhooks`` library does not generate them)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host, without credentials or a fragment,
    at most 2048 characters; else raises ``InvalidWebhookUrl``."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise InvalidWebhookUrl(f"{url!r} is not a valid URL.", field="url") from None
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"The URL is longer than {MAX_URL_LENGTH} characters.", field="url")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookUrl("The URL must be absolute, http:// or https://.", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("The URL must not carry credentials (user:password@).", field="url")
    if parts.fragment or any(c.isspace() for c in url) or port == 0:
        raise InvalidWebhookUrl(f"{url!r} is not a valid webhook URL.", field="url")
    return url


async def check_target(url: str, *, allow_private: bool) -> str:
    """``check_url``, then the SSRF guard ahead of time: a host that resolves now to a non-global
    address is refused (``WebhookUrlNotAllowed``) unless ``allow_private``. Every delivery checks
    again, at connection time (``kit/netguard.PinnedTransport``)."""
    check_url(url)
    refused = await netguard.refused_address(url, allow_private=allow_private)
    if refused is not None:
        raise WebhookUrlNotAllowed(
            f"{url} points into a private network ({refused}); webhooks go to public addresses only.", field="url"
        )
    return url


def check_event_types(event_types: list[str]) -> list[str]:
    """The event types, deduplicated in order; raises ``InvalidEventType`` for an unknown one."""
    for event_type in event_types:
        if event_type not in EVENT_TYPES:
            raise InvalidEventType(
                f"{event_type!r} is not an event type; use one of {', '.join(EVENT_TYPES)}.", field="eventTypes"
            )
    return list(dict.fromkeys(event_types))


def envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The body of a team event: ``{"type", "timestamp" (ISO 8601, UTC), "data"}``."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return {"type": event_type, "timestamp": now, "data": data}


# --------------------------------------------------------------------------------------------
# The outbox: emit in the caller's transaction

_EMIT = text(f"""
WITH targets AS (
    SELECT id FROM webhook_endpoints
     WHERE team_id = :team_id AND enabled
       AND (cardinality(event_types) = 0 OR CAST(:event_type AS varchar) = ANY(event_types))
), message AS (
    INSERT INTO webhook_messages (team_id, event_type, payload)
    SELECT :team_id, :event_type, CAST(:payload AS jsonb) WHERE EXISTS (SELECT 1 FROM targets)
    RETURNING id
), deliveries AS (
    INSERT INTO webhook_deliveries (message_id, endpoint_id)
    SELECT message.id, targets.id FROM message, targets
    RETURNING id
)
SELECT count(*) AS deliveries, CASE WHEN count(*) > 0 THEN pg_notify('{CHANNEL}', '') END AS woken FROM deliveries
""")


async def emit(session: AsyncSession, team_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> int:
    """Queue the event ``event_type`` (one of ``EVENT_TYPES``) with ``data`` for every enabled
    endpoint of the team that takes it, in the caller's transaction: one statement, which writes
    nothing when no endpoint takes it. Returns the number of deliveries queued."""
    assert event_type in EVENT_TYPES, event_type
    payload = json.dumps(envelope(event_type, data), default=str)
    result = await session.execute(_EMIT, {"team_id": team_id, "event_type": event_type, "payload": payload})
    return int(result.scalar_one())


# emit for several events: the message ids are drawn first (a volatile CTE is evaluated once), so
# that each event's deliveries find their message.
_EMIT_MANY = text(f"""
WITH events AS MATERIALIZED (
    SELECT e.*, gen_random_uuid() AS message_id
      FROM unnest(CAST(:team_ids AS uuid[]), CAST(:event_types AS varchar[]), CAST(:payloads AS text[]))
           WITH ORDINALITY AS e(team_id, event_type, payload, ord)
), targets AS (
    SELECT e.message_id, w.id AS endpoint_id, e.ord
      FROM events e JOIN webhook_endpoints w ON w.team_id = e.team_id AND w.enabled
       AND (cardinality(w.event_types) = 0 OR e.event_type = ANY(w.event_types))
), message AS (
    INSERT INTO webhook_messages (id, team_id, event_type, payload)
    SELECT e.message_id, e.team_id, e.event_type, CAST(e.payload AS jsonb) FROM events e
     WHERE e.message_id IN (SELECT message_id FROM targets) ORDER BY e.ord
), deliveries AS (
    INSERT INTO webhook_deliveries (message_id, endpoint_id)
    SELECT message_id, endpoint_id FROM targets ORDER BY ord
    RETURNING id
)
SELECT count(*) AS deliveries, CASE WHEN count(*) > 0 THEN pg_notify('{CHANNEL}', '') END AS woken FROM deliveries
""")


async def emit_many(session: AsyncSession, events: list[tuple[uuid.UUID, str, dict[str, Any]]]) -> int:
    """``emit`` for several ``(team_id, event_type, data)`` events in one statement (what each
    writes is what ``emit`` would write). Returns the number of deliveries queued."""
    if not events:
        return 0
    assert all(event_type in EVENT_TYPES for _, event_type, _ in events), events
    result = await session.execute(_EMIT_MANY, {
        "team_ids": [team_id for team_id, _, _ in events], "event_types": [event_type for _, event_type, _ in events],
        "payloads": [json.dumps(envelope(event_type, data), default=str) for _, event_type, data in events],
    })
    return int(result.scalar_one())


_EMIT_TO_URL = text(f"""
WITH secret AS (
    INSERT INTO webhook_signing_secrets (team_id, secret) VALUES (:team_id, :secret)
    ON CONFLICT (team_id) DO NOTHING
), message AS (
    INSERT INTO webhook_messages (team_id, event_type, payload)
    VALUES (:team_id, :event_type, CAST(:payload AS jsonb))
    RETURNING id
), delivery AS (
    INSERT INTO webhook_deliveries (message_id, url) SELECT id, :url FROM message
    RETURNING id, message_id
)
SELECT delivery.id, delivery.message_id, pg_notify('{CHANNEL}', '') AS woken FROM delivery
""")


@dataclass(frozen=True)
class Queued:
    """A queued ad-hoc delivery: ``message_id`` is the ``webhook-id`` header's value
    (``msg_<hex>``, see ``message_header_id``)."""

    delivery_id: uuid.UUID
    message_id: uuid.UUID


async def emit_to_url(
    session: AsyncSession, team_id: uuid.UUID, url: str, event_type: str, payload: dict[str, Any]
) -> Queued:
    """Queue ``payload`` (sent as it is, as JSON) to ``url``, in the caller's transaction, signed
    with the team's default signing secret (created if the team has none), retried on the same
    schedule as endpoints' deliveries. ``event_type`` is a label for the log (e.g.
    ``prediction.completed``). Raises ``InvalidWebhookUrl``; the SSRF guard applies when it is
    sent (call ``check_target`` first to refuse a private address up front)."""
    check_url(url)
    row = (await session.execute(_EMIT_TO_URL, {
        "team_id": team_id, "secret": new_secret(), "event_type": event_type[:64],
        "payload": json.dumps(payload, default=str), "url": url,
    })).one()
    return Queued(row.id, row.message_id)


def message_header_id(message_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a message (no ``.``, as the spec requires)."""
    return f"msg_{message_id.hex}"


_DEFAULT_SECRET = text("""
WITH created AS (
    INSERT INTO webhook_signing_secrets (team_id, secret) VALUES (:team_id, :secret)
    ON CONFLICT (team_id) DO NOTHING RETURNING secret
)
SELECT secret FROM created UNION ALL SELECT secret FROM webhook_signing_secrets WHERE team_id = :team_id
""")


async def default_secret(session: AsyncSession, team_id: uuid.UUID) -> str:
    """The team's default signing secret (``whsec_…``), created on first use: what
    ``emit_to_url`` signs with, and what Replicate's ``GET /v1/webhooks/default/secret`` returns
    as ``{"key": …}``."""
    secret = (await session.execute(_DEFAULT_SECRET, {"team_id": team_id, "secret": new_secret()})).scalars().first()
    if secret is None:  # created by a concurrent transaction after this statement's snapshot
        secret = await session.scalar(
            text("SELECT secret FROM webhook_signing_secrets WHERE team_id = :team_id"), {"team_id": team_id}
        )
    assert secret is not None
    return str(secret)


# --------------------------------------------------------------------------------------------
# Endpoints


async def create_endpoint(
    session: AsyncSession, team_id: uuid.UUID, *, url: str, event_types: list[str], description: str,
    allow_private: bool,
) -> WebhookEndpoint:
    """A new endpoint with a new secret (the caller shows it once). Raises ``InvalidWebhookUrl``,
    ``WebhookUrlNotAllowed``, ``InvalidEventType``."""
    endpoint = WebhookEndpoint(
        team_id=team_id, url=await check_target(url, allow_private=allow_private),
        event_types=check_event_types(event_types), description=description, secret=new_secret(),
    )
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    return endpoint


async def get_endpoint(session: AsyncSession, team_id: uuid.UUID, endpoint_id: uuid.UUID, *, lock: bool = False) -> WebhookEndpoint:
    """The team's endpoint; raises ``WebhookEndpointNotFound`` (also for another team's)."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.team_id == team_id)
    endpoint = await session.scalar(query.with_for_update() if lock else query)
    if endpoint is None:
        raise WebhookEndpointNotFound(f"No webhook endpoint {endpoint_id}.")
    return endpoint


async def list_endpoints(
    session: AsyncSession, team_id: uuid.UUID, *, limit: int, after: tuple[dt.datetime, uuid.UUID] | None = None
) -> list[WebhookEndpoint]:
    """The team's endpoints, newest first, after the cursor ``(created_at, id)``."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.team_id == team_id)
    if after is not None:
        query = query.where(
            (WebhookEndpoint.created_at < after[0]) | ((WebhookEndpoint.created_at == after[0]) & (WebhookEndpoint.id < after[1]))
        )
    query = query.order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def update_endpoint(
    session: AsyncSession, team_id: uuid.UUID, endpoint_id: uuid.UUID, changes: dict[str, Any], *, allow_private: bool
) -> WebhookEndpoint:
    """Change ``url``, ``event_types``, ``enabled`` and/or ``description``. Enabling an endpoint
    clears its failure record. Raises ``WebhookEndpointNotFound`` and the errors of create."""
    endpoint = await get_endpoint(session, team_id, endpoint_id, lock=True)
    if changes.get("url") is not None:
        endpoint.url = await check_target(changes["url"], allow_private=allow_private)
    if changes.get("event_types") is not None:
        endpoint.event_types = check_event_types(changes["event_types"])
    if changes.get("description") is not None:
        endpoint.description = changes["description"]
    if changes.get("enabled") is not None:
        if changes["enabled"] and not endpoint.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        elif not changes["enabled"] and endpoint.enabled:
            endpoint.disabled_reason = "disabled by request"
        endpoint.enabled = changes["enabled"]
    endpoint.updated_at = dt.datetime.now(dt.UTC)
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, team_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """Delete the endpoint with its deliveries and their log. Raises ``WebhookEndpointNotFound``."""
    endpoint = await get_endpoint(session, team_id, endpoint_id)
    await session.delete(endpoint)
    await session.flush()


async def rotate_secret(
    session: AsyncSession, team_id: uuid.UUID, endpoint_id: uuid.UUID, *, overlap_seconds: float
) -> WebhookEndpoint:
    """A new secret for the endpoint; the current one keeps signing too (a second ``v1,``
    signature, as Standard Webhooks allows) for ``overlap_seconds``, so the receiver can switch
    without losing messages. Raises ``WebhookEndpointNotFound``."""
    endpoint = await get_endpoint(session, team_id, endpoint_id, lock=True)
    now = dt.datetime.now(dt.UTC)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + dt.timedelta(seconds=overlap_seconds)
    endpoint.secret = new_secret()
    endpoint.updated_at = now
    await session.flush()
    return endpoint


# --------------------------------------------------------------------------------------------
# The delivery log, resend and replay


@dataclass(frozen=True)
class DeliveryEntry:
    delivery: WebhookDelivery
    event_type: str
    attempts: list[WebhookAttempt]


async def list_deliveries(
    session: AsyncSession, team_id: uuid.UUID, endpoint_id: uuid.UUID, *, limit: int,
    after: tuple[dt.datetime, uuid.UUID] | None = None, status: str | None = None,
) -> list[DeliveryEntry]:
    """The endpoint's deliveries, newest first, after the cursor ``(created_at, id)``, each with
    its message's event type and its attempts (oldest first). Raises ``WebhookEndpointNotFound``."""
    await get_endpoint(session, team_id, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if after is not None:
        query = query.where(
            (WebhookDelivery.created_at < after[0]) | ((WebhookDelivery.created_at == after[0]) & (WebhookDelivery.id < after[1]))
        )
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit)
    deliveries = list((await session.scalars(query)).all())
    if not deliveries:
        return []
    rows = await session.execute(
        text("SELECT id, event_type FROM webhook_messages WHERE id = ANY(:ids)"), {"ids": [d.message_id for d in deliveries]}
    )
    types: dict[uuid.UUID, str] = {row.id: row.event_type for row in rows}
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    for attempt in await session.scalars(
        select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts))).order_by(WebhookAttempt.id)
    ):
        attempts[attempt.delivery_id].append(attempt)
    return [DeliveryEntry(d, types.get(d.message_id, ""), attempts[d.id]) for d in deliveries]


async def resend(
    session: AsyncSession, team_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> DeliveryEntry:
    """Send the delivery's message to the endpoint again, now: a new delivery of the same message
    (same ``webhook-id``, so receivers can tell it is the same event), with its own retries.
    Raises ``WebhookEndpointNotFound``, ``WebhookDeliveryNotFound``."""
    await get_endpoint(session, team_id, endpoint_id)
    row = (await session.execute(text(f"""
        WITH original AS (
            SELECT d.message_id, m.event_type FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
             WHERE d.id = :delivery_id AND d.endpoint_id = :endpoint_id
        ), copy AS (
            INSERT INTO webhook_deliveries (message_id, endpoint_id)
            SELECT message_id, :endpoint_id FROM original RETURNING id
        )
        SELECT copy.id, original.event_type, pg_notify('{CHANNEL}', '') AS woken FROM copy, original
    """), {"delivery_id": delivery_id, "endpoint_id": endpoint_id})).one_or_none()
    if row is None:
        raise WebhookDeliveryNotFound(f"Webhook endpoint {endpoint_id} has no delivery {delivery_id}.")
    delivery = await session.get(WebhookDelivery, row.id)
    assert delivery is not None
    return DeliveryEntry(delivery, row.event_type, [])


async def replay(session: AsyncSession, team_id: uuid.UUID, endpoint_id: uuid.UUID, *, since: dt.datetime) -> int:
    """Queue again, now, every ``failed`` delivery of the endpoint created at or after ``since``
    (each gets one more attempt, then its retries continue from where they stopped). Returns how
    many. Raises ``WebhookEndpointNotFound``."""
    await get_endpoint(session, team_id, endpoint_id)
    result = await session.execute(text(f"""
        WITH requeued AS (
            UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now()
             WHERE endpoint_id = :endpoint_id AND status = 'failed' AND created_at >= :since
            RETURNING id
        )
        SELECT count(*), CASE WHEN count(*) > 0 THEN pg_notify('{CHANNEL}', '') END FROM requeued
    """), {"endpoint_id": endpoint_id, "since": since})
    return int(result.scalar_one())
