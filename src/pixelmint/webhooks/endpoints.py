"""``/api/v1/webhook-endpoints``: a team's outbound webhook endpoints (Standard Webhooks), their
delivery log, resend and replay. Any API key of the team may manage them."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from pixelmint.accounts.auth import IdempotencyDep, PrincipalDep, rate_limit
from pixelmint.kit.errors import responses
from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.webhooks import service
from pixelmint.webhooks.errors import (
    InvalidEventType,
    InvalidWebhookUrl,
    WebhookDeliveryNotFound,
    WebhookEndpointNotFound,
    WebhookUrlNotAllowed,
)
from pixelmint.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    EndpointCreate,
    EndpointOut,
    EndpointPage,
    EndpointPatch,
    EndpointWithSecret,
    ReplayIn,
    ReplayOut,
)
from pixelmint.webhooks.tables import WebhookEndpoint

router = APIRouter(prefix="/api/v1/webhook-endpoints", tags=["webhooks"])

Limit = Annotated[int, Query(ge=1, le=100)]


def _with_secret(endpoint: WebhookEndpoint) -> EndpointWithSecret:
    return EndpointWithSecret.model_validate(endpoint)


def _delivery(entry: service.DeliveryEntry) -> DeliveryOut:
    d = entry.delivery
    return DeliveryOut(
        id=d.id, message_id=d.message_id, event_type=entry.event_type, status=d.status, attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.status == "pending" else None, last_status_code=d.last_status_code,
        last_response=d.last_response, last_duration_ms=d.last_duration_ms, last_error=d.last_error,
        created_at=d.created_at,
        log=[AttemptOut(attempt=a.attempt, succeeded=a.succeeded, status_code=a.status_code, response=a.response,
                        duration_ms=a.duration_ms, error=a.error, at=a.created_at) for a in entry.attempts],
    )


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=EndpointWithSecret, summary="Add a webhook endpoint",
    responses=responses(InvalidWebhookUrl, WebhookUrlNotAllowed, InvalidEventType),
    dependencies=[rate_limit("webhooks")],
)
async def create_endpoint(
    body: EndpointCreate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep, _: IdempotencyDep,
) -> EndpointWithSecret:
    """The endpoint with its signing secret (``whsec_…``), shown only in this answer (and after a
    rotation). Its URL must not resolve to a private address (SSRF guard)."""
    endpoint = await service.create_endpoint(
        session, principal.team_id, url=body.url, event_types=body.event_types, description=body.description,
        allow_private=settings.allow_private_urls,
    )
    return _with_secret(endpoint)


@router.get("", response_model=EndpointPage, summary="The team's webhook endpoints, newest first")
async def list_endpoints(principal: PrincipalDep, session: SessionDep, limit: Limit = 20, cursor: str | None = None) -> EndpointPage:
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    rows = await service.list_endpoints(session, principal.team_id, limit=limit + 1, after=after)
    page = rows[:limit]
    return EndpointPage(
        items=[EndpointOut.model_validate(e) for e in page],
        next_cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > limit else None,
    )


@router.get("/{endpoint_id}", response_model=EndpointOut, summary="A webhook endpoint",
            responses=responses(WebhookEndpointNotFound))
async def get_endpoint(endpoint_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> EndpointOut:
    return EndpointOut.model_validate(await service.get_endpoint(session, principal.team_id, endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointOut, summary="Change a webhook endpoint",
              responses=responses(WebhookEndpointNotFound, InvalidWebhookUrl, WebhookUrlNotAllowed, InvalidEventType))
async def update_endpoint(
    endpoint_id: uuid.UUID, body: EndpointPatch, principal: PrincipalDep, session: SessionDep, settings: SettingsDep,
) -> EndpointOut:
    """Change its URL, event types, description, or enable/disable it (enabling clears its failure
    record; deliveries that failed meanwhile can be replayed)."""
    endpoint = await service.update_endpoint(
        session, principal.team_id, endpoint_id, body.model_dump(exclude_unset=True),
        allow_private=settings.allow_private_urls,
    )
    return EndpointOut.model_validate(endpoint)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a webhook endpoint",
               responses=responses(WebhookEndpointNotFound))
async def delete_endpoint(endpoint_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> Response:
    await service.delete_endpoint(session, principal.team_id, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret, summary="Rotate the signing secret",
             responses=responses(WebhookEndpointNotFound), dependencies=[rate_limit("webhooks")])
async def rotate_secret(
    endpoint_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, settings: SettingsDep, _: IdempotencyDep,
) -> EndpointWithSecret:
    """A new secret, shown only in this answer. Until ``previousSecretExpiresAt``
    (``PIXELMINT_WEBHOOK_SECRET_OVERLAP_SECONDS``, 24 h) messages carry a signature by the old
    secret too, so the receiver can switch without losing any."""
    endpoint = await service.rotate_secret(
        session, principal.team_id, endpoint_id, overlap_seconds=settings.webhook_secret_overlap_seconds
    )
    return _with_secret(endpoint)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage, summary="The endpoint's delivery log",
            responses=responses(WebhookEndpointNotFound))
async def list_deliveries(
    endpoint_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, limit: Limit = 20, cursor: str | None = None,
    status_: Annotated[Literal["pending", "succeeded", "failed"] | None, Query(alias="status")] = None,
) -> DeliveryPage:
    """Deliveries, newest first, each with its attempts (status code, first KiB of the answer,
    duration, error) and, while pending, when the next attempt is due."""
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    rows = await service.list_deliveries(
        session, principal.team_id, endpoint_id, limit=limit + 1, after=after, status=status_,
    )
    page = rows[:limit]
    last = page[-1].delivery if page else None
    return DeliveryPage(
        items=[_delivery(entry) for entry in page],
        next_cursor=encode_cursor(last.created_at.isoformat(), str(last.id)) if last and len(rows) > limit else None,
    )


@router.post("/{endpoint_id}/deliveries/{delivery_id}/resend", status_code=status.HTTP_202_ACCEPTED,
             response_model=DeliveryOut, summary="Send a delivery's message again",
             responses=responses(WebhookEndpointNotFound, WebhookDeliveryNotFound), dependencies=[rate_limit("webhooks")])
async def resend(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, _: IdempotencyDep,
) -> DeliveryOut:
    """A new delivery of the same message (same ``webhook-id``) to this endpoint, sent now."""
    return _delivery(await service.resend(session, principal.team_id, endpoint_id, delivery_id))


@router.post("/{endpoint_id}/replay", response_model=ReplayOut, status_code=status.HTTP_202_ACCEPTED,
             summary="Queue again the failed deliveries since a time",
             responses=responses(WebhookEndpointNotFound), dependencies=[rate_limit("webhooks")])
async def replay(
    endpoint_id: uuid.UUID, body: ReplayIn, principal: PrincipalDep, session: SessionDep, _: IdempotencyDep,
) -> ReplayOut:
    return ReplayOut(requeued=await service.replay(session, principal.team_id, endpoint_id, since=body.since))
