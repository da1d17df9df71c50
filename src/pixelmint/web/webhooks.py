"""Outbound webhooks (owners and admins): the team's endpoints, adding one (URL, event types;
its signing secret shown once), editing, enabling and disabling, deleting (after a confirmation
page), rotating the secret (the new one shown once; the old one keeps signing for
``PIXELMINT_WEBHOOK_SECRET_OVERLAP_SECONDS``), and per endpoint its delivery log (each delivery's
attempts: status code, the start of the answer, duration, error, the next attempt), resending one
delivery and replaying the failed ones since a time. All through ``webhooks/service.py``, as
``/api/v1/webhook-endpoints``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from pixelmint.kit.errors import InvalidRequest
from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.web.auth import ManagerDep
from pixelmint.web.forms import EnableForm, ReplayForm, WebForm, WebhookEndpointForm
from pixelmint.web.paging import Filters, with_query
from pixelmint.web.routing import web_router
from pixelmint.web.templating import render
from pixelmint.webhooks import service
from pixelmint.webhooks.tables import DELIVERY_STATUSES, WebhookEndpoint

router = web_router(prefix="/app/webhooks")

DELIVERIES_PAGE = 20
EVENT_LABELS = {
    "job.succeeded": "a job succeeded", "job.failed": "a job failed", "job.canceled": "a job was canceled",
    "model.ready": "a custom model is trained", "model.failed": "a custom model's training failed",
    "credits.low_balance": "credits fell below the low-balance threshold",
    "credits.replenished": "the monthly credits arrived",
}
FIELDS = {"url": "url", "eventTypes": "event_types", "description": "description"}

EndpointFormDep = Annotated[WebhookEndpointForm, Form()]


def _field(exc: InvalidRequest) -> str:
    return FIELDS.get(str(exc.extra.get("field", "url")), "url")


async def _list_page(
    request: Request, session: SessionDep, user: ManagerDep, *, created: WebhookEndpoint | None = None,
    form: WebhookEndpointForm | None = None, errors: dict[str, str] | None = None, status_code: int = 200,
) -> Response:
    endpoints = await service.list_endpoints(session, user.team_id, limit=100)
    return render(request, "webhooks.html", {
        "endpoints": endpoints, "created": created, "event_types": service.EVENT_TYPES, "event_labels": EVENT_LABELS,
        "form": form or WebhookEndpointForm(), "errors": errors or {},
    }, status_code=status_code)


@router.get("")
async def webhooks_page(request: Request, session: SessionDep, user: ManagerDep) -> Response:
    return await _list_page(request, session, user)


@router.post("")
async def create_endpoint(
    request: Request, session: SessionDep, settings: SettingsDep, user: ManagerDep, form: EndpointFormDep,
) -> Response:
    """A new endpoint, with its secret shown in this answer only (201); a refused URL or event
    type is shown beside its field (422)."""
    try:
        endpoint = await service.create_endpoint(
            session, user.team_id, url=form.url.strip(), event_types=form.event_types, description=form.description.strip(),
            allow_private=settings.allow_private_urls,
        )
    except InvalidRequest as exc:
        return await _list_page(request, session, user, form=form, errors={_field(exc): exc.message}, status_code=422)
    return await _list_page(request, session, user, created=endpoint, status_code=201)


async def _detail(
    request: Request, session: SessionDep, user: ManagerDep, endpoint_id: uuid.UUID, *, status: str = "",
    cursor: str = "", new_secret: str | None = None, form: WebhookEndpointForm | None = None,
    errors: dict[str, str] | None = None, status_code: int = 200,
) -> Response:
    endpoint = await service.get_endpoint(session, user.team_id, endpoint_id)
    filters = Filters()
    chosen = filters.choice("status", status, DELIVERY_STATUSES)
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    entries = await service.list_deliveries(session, user.team_id, endpoint_id, limit=DELIVERIES_PAGE + 1, after=after,
                                            status=chosen)
    page = entries[:DELIVERIES_PAGE]
    next_link = None
    if len(entries) > DELIVERIES_PAGE:
        last = page[-1].delivery
        next_link = with_query(request, cursor=encode_cursor(last.created_at.isoformat(), str(last.id)))
    shown_form = form or WebhookEndpointForm(url=endpoint.url, description=endpoint.description,
                                             event_types=list(endpoint.event_types))
    return render(request, "webhook.html", {
        "endpoint": endpoint, "entries": page, "statuses": DELIVERY_STATUSES, "status": status,
        "next_link": next_link, "first_link": with_query(request, cursor=None) if cursor else None,
        "new_secret": new_secret, "event_types": service.EVENT_TYPES, "event_labels": EVENT_LABELS,
        "form": shown_form, "errors": {**filters.errors, **(errors or {})},
        "replayed": request.query_params.get("replayed"), "resent": request.query_params.get("resent"),
        "now": dt.datetime.now(dt.UTC),
    }, block="deliveries", status_code=status_code)


@router.get("/{endpoint_id}")
async def endpoint_page(
    request: Request, endpoint_id: uuid.UUID, session: SessionDep, user: ManagerDep, status: str = "", cursor: str = "",
) -> Response:
    """The endpoint and its delivery log (``?status=pending|succeeded|failed``, 20 a page)."""
    return await _detail(request, session, user, endpoint_id, status=status, cursor=cursor)


@router.post("/{endpoint_id}")
async def update_endpoint(
    request: Request, endpoint_id: uuid.UUID, session: SessionDep, settings: SettingsDep, user: ManagerDep,
    form: EndpointFormDep,
) -> Response:
    """Change the URL, the event types (none ticked: all) and the description."""
    changes: dict[str, Any] = {"url": form.url.strip(), "event_types": form.event_types,
                               "description": form.description.strip()}
    try:
        await service.update_endpoint(session, user.team_id, endpoint_id, changes, allow_private=settings.allow_private_urls)
    except InvalidRequest as exc:
        await session.rollback()
        return await _detail(request, session, user, endpoint_id, form=form, errors={_field(exc): exc.message},
                             status_code=422)
    return RedirectResponse(f"/app/webhooks/{endpoint_id}", status_code=303)


@router.post("/{endpoint_id}/enabled")
async def set_enabled(
    endpoint_id: uuid.UUID, session: SessionDep, settings: SettingsDep, user: ManagerDep,
    form: Annotated[EnableForm, Form()],
) -> Response:
    """Enable (clears its failure record) or disable the endpoint."""
    await service.update_endpoint(session, user.team_id, endpoint_id, {"enabled": form.enabled},
                                  allow_private=settings.allow_private_urls)
    return RedirectResponse(f"/app/webhooks/{endpoint_id}", status_code=303)


@router.post("/{endpoint_id}/rotate")
async def rotate_secret(
    request: Request, endpoint_id: uuid.UUID, session: SessionDep, settings: SettingsDep, user: ManagerDep,
    form: Annotated[WebForm, Form()],
) -> Response:
    """A new secret, shown in this answer only (not a redirect)."""
    endpoint = await service.rotate_secret(session, user.team_id, endpoint_id,
                                           overlap_seconds=settings.webhook_secret_overlap_seconds)
    return await _detail(request, session, user, endpoint_id, new_secret=endpoint.secret)


@router.get("/{endpoint_id}/delete")
async def confirm_delete(request: Request, endpoint_id: uuid.UUID, session: SessionDep, user: ManagerDep) -> Response:
    endpoint = await service.get_endpoint(session, user.team_id, endpoint_id)
    return render(request, "webhook_delete.html", {"endpoint": endpoint})


@router.post("/{endpoint_id}/delete")
async def delete_endpoint(endpoint_id: uuid.UUID, session: SessionDep, user: ManagerDep) -> Response:
    await service.delete_endpoint(session, user.team_id, endpoint_id)
    return RedirectResponse("/app/webhooks", status_code=303)


@router.post("/{endpoint_id}/deliveries/{delivery_id}/resend")
async def resend(endpoint_id: uuid.UUID, delivery_id: uuid.UUID, session: SessionDep, user: ManagerDep) -> Response:
    """The delivery's message again, now, as a new delivery (same ``webhook-id``)."""
    await service.resend(session, user.team_id, endpoint_id, delivery_id)
    return RedirectResponse(f"/app/webhooks/{endpoint_id}?resent=1", status_code=303)


@router.post("/{endpoint_id}/replay")
async def replay(
    request: Request, endpoint_id: uuid.UUID, session: SessionDep, user: ManagerDep, form: Annotated[ReplayForm, Form()],
) -> Response:
    """Queue again the failed deliveries created since ``form.since`` (``YYYY-MM-DDTHH:MM``, UTC,
    as an ``<input type=datetime-local>`` sends it)."""
    try:
        since = dt.datetime.fromisoformat(form.since.strip()).replace(tzinfo=dt.UTC)
    except ValueError:
        return await _detail(request, session, user, endpoint_id, errors={"since": "Use a time such as 2026-01-31T09:00."},
                             status_code=422)
    count = await service.replay(session, user.team_id, endpoint_id, since=since)
    return RedirectResponse(f"/app/webhooks/{endpoint_id}?replayed={count}", status_code=303)
