"""The credit API for other apps, authenticated by their service keys: validate, consume, reserve,
capture, release, usage and a team's balance (``credits/apps.py``, ``pixelmint.client``). The
teams' side (the apps they grant) is in ``credits/endpoints.py``, the admins' in
``credits/admin_endpoints.py``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from pixelmint.accounts.errors import InvalidApiKey, MissingApiKey, TeamNotFound
from pixelmint.accounts.service import authenticate
from pixelmint.credits import apps
from pixelmint.credits.auth import SPENDING, AppDep
from pixelmint.credits.errors import (
    AppNotAuthorized,
    HoldAlreadySettled,
    HoldExpired,
    HoldNotFound,
    InsufficientCredits,
    InvalidAmount,
    InvalidServiceKey,
    InvalidTtl,
    UnknownOperation,
)
from pixelmint.credits.schemas import (
    CaptureRequest,
    ConsumeOut,
    ConsumeRequest,
    HoldOut,
    OperationRequest,
    ReleaseRequest,
    ReserveRequest,
    TeamBalanceOut,
    UsageOut,
    UsagePage,
    ValidateOut,
    present_balance,
    present_hold,
)
from pixelmint.kit.errors import responses
from pixelmint.kit.http import BearerDep, SessionDep, SettingsDep
from pixelmint.kit.schemas import UtcDatetime

router = APIRouter(prefix="/api/v1/credits", tags=["credit API"])

_TEAM = (AppNotAuthorized, TeamNotFound)
_OPERATION = (*_TEAM, UnknownOperation, InvalidAmount)


@router.post("/validate", response_model=ValidateOut, summary="Would this operation be affordable?",
             responses=responses(*_OPERATION))
async def validate(body: OperationRequest, app: AppDep, session: SessionDep) -> ValidateOut:
    v = await apps.validate(session, app, team_id=body.team_id, operation=body.operation, amount=body.amount)
    return ValidateOut(has_credits=v.has_credits, available_credits=v.available_credits, required_credits=v.required_credits)


@router.post("/consume", response_model=ConsumeOut, summary="Charge for an operation that succeeded",
             responses=responses(InsufficientCredits, *_OPERATION), dependencies=SPENDING)
async def consume(body: ConsumeRequest, app: AppDep, session: SessionDep, settings: SettingsDep) -> ConsumeOut:
    # alone: when nothing ran in the session before (no Idempotency-Key claim; the app, its grant
    # and its price came from the caches), the charge commits in one round trip.
    done = await apps.consume(
        session, app, team_id=body.team_id, operation=body.operation, amount=body.amount,
        description=body.description, metadata=body.metadata,
        fail_open=settings.credit_enforcement == "fail_open", alone=True,
    )
    return ConsumeOut(transaction_id=done.transaction_id, consumed_credits=done.amount, available_credits=done.available_after)


@router.post("/reserve", response_model=HoldOut, status_code=status.HTTP_201_CREATED,
             summary="Hold credits for a long operation",
             responses=responses(InsufficientCredits, *_OPERATION, InvalidTtl), dependencies=SPENDING)
async def reserve(body: ReserveRequest, app: AppDep, session: SessionDep, settings: SettingsDep) -> HoldOut:
    held = await apps.hold(
        session, app, team_id=body.team_id, operation=body.operation, amount=body.amount,
        ttl_seconds=body.ttl_seconds, max_ttl_seconds=settings.max_hold_seconds,
        fail_open=settings.credit_enforcement == "fail_open",
    )
    return present_hold(held)


SETTLED = responses(AppNotAuthorized, HoldNotFound, HoldAlreadySettled, HoldExpired, InvalidAmount)


@router.post("/capture", response_model=HoldOut, summary="Charge a hold (all or part of it)", dependencies=SPENDING,
             responses=SETTLED)
async def capture(body: CaptureRequest, app: AppDep, session: SessionDep) -> HoldOut:
    return present_hold(await apps.capture(session, app, body.hold_id, amount=body.amount))


@router.post("/release", response_model=HoldOut, summary="Give a hold back (again: a no-op)", dependencies=SPENDING,
             responses=SETTLED)
async def release(body: ReleaseRequest, app: AppDep, session: SessionDep) -> HoldOut:
    return present_hold(await apps.release(session, app, body.hold_id))


@router.get("/usage", response_model=UsagePage, summary="Credits spent per app and operation",
            responses=responses(AppNotAuthorized, MissingApiKey, InvalidApiKey, InvalidServiceKey))
async def usage(
    session: SessionDep,
    credentials: BearerDep,
    since: Annotated[UtcDatetime | None, Query(alias="from")] = None,
    until: Annotated[UtcDatetime | None, Query(alias="to")] = None,
    team_id: Annotated[uuid.UUID | None, Query(
        alias="teamId", description="Service key only: the app's usage of this team (which must have granted it)")] = None,
) -> UsagePage:
    """With a service key: the app's usage across teams, or of one team (``teamId``). With a
    team's API key: the team's usage by every app (Pixelmint's own jobs appear as ``pixelmint``).
    Consumes and captures count."""
    token = credentials.credentials if credentials else None
    if token and token.startswith(apps.SERVICE_KEY_PREFIX):
        app = await apps.authenticate_app(session, token)
        if team_id is not None:
            await apps.require_grant(session, app, team_id)
        rows = await apps.usage(session, app_id=app.app_id, team_id=team_id, since=since, until=until)
    else:
        principal = await authenticate(session, token)
        rows = await apps.usage(session, team_id=principal.team_id, since=since, until=until)
    return UsagePage(items=[UsageOut(app=r.app, operation=r.operation, count=r.count, credits=r.credits) for r in rows])


@router.get("/team-balance", response_model=TeamBalanceOut, summary="A team's balance, for an app",
            responses=responses(*_TEAM))
async def team_balance(
    app: AppDep, session: SessionDep, team_id: Annotated[uuid.UUID, Query(alias="teamId")]
) -> TeamBalanceOut:
    await apps.require_grant(session, app, team_id)
    return present_balance(await apps.team_balance(session, team_id))
