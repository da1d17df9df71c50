"""Which app is calling the credit API: its service key in ``Authorization: Bearer``, as a request
dependency, and the Idempotency-Key and rate-limit dependencies keyed on it (``kit/http.py``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pixelmint.credits import apps
from pixelmint.credits.errors import AppNotAuthorized, InvalidServiceKey
from pixelmint.kit import http
from pixelmint.kit.errors import error_responses


@error_responses(InvalidServiceKey)
async def get_app(session: http.SessionDep, credentials: http.BearerDep) -> apps.AppPrincipal:
    return await apps.authenticate_app(session, credentials.credentials if credentials else None)


AppDep = Annotated[apps.AppPrincipal, Depends(get_app)]


async def _team_in_body(request: Request) -> uuid.UUID | None:
    """``teamId`` of a JSON body (credit-API calls name the team they charge), if there is one.

    Whatever the ``Content-Type`` says: FastAPI accepts JSON under several (``application/json;
    charset=utf-8``, ``Application/JSON``, ``application/…+json``), and a limit that trusted the
    header could be dodged by changing it. ``request.json()`` reuses FastAPI's parse when it made one.
    """
    try:
        return uuid.UUID((await request.json())["teamId"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


@dataclass(frozen=True)
class SpendingCaller:
    """Whose rate limits a spending call counts against (``kit/http.rate_limit``): the app's, and
    the team's named by the body's ``teamId`` only when that team granted the app — a call the app
    may not make (refused 403 by the endpoint) spends no team's limit."""

    app_id: uuid.UUID
    team_id: uuid.UUID | None


async def spending_caller(request: Request, session: http.SessionDep, app: AppDep) -> SpendingCaller:
    team_id = await _team_in_body(request)
    if team_id is not None:
        try:
            await apps.require_grant(session, app, team_id)  # cached: no statement once seen
        except AppNotAuthorized:
            team_id = None
    return SpendingCaller(app.app_id, team_id)


# The POSTs that spend: per-app and per-team limits of "consume", then the Idempotency-Key.
SPENDING = [http.rate_limit("consume", spending_caller), http.idempotent(get_app)]
