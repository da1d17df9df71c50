"""The credit API for other apps (service keys): validate, consume, reserve, capture, release,
usage; for teams: ``estimate`` and the apps they grant (``/credits/apps``); for admins: apps and
their grants (``/admin/apps``). See ``credits/apps.py`` and ``pixelmint.client``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ConfigDict, Field

from pixelmint.accounts.service import authenticate
from pixelmint.api.deps import AdminDep, PrincipalDep, RuntimeDep, SessionDep, idempotent, rate_limit
from pixelmint.api.errors import error_responses
from pixelmint.credits import apps
from pixelmint.credits.pricing import current_pricing, pricing_as_config, set_pricing
from pixelmint.kit.errors import InvalidRequest
from pixelmint.kit.schemas import (
    RESOLUTION_PATTERN,
    CamelModel,
    Credits,
    NonNegativeCredits,
    PositiveCredits,
    RequestMap,
    RequestModel,
    UtcDatetime,
)

router = APIRouter(prefix="/api/v1/credits", tags=["credit API"])
admin_router = APIRouter(prefix="/api/v1/admin/apps", tags=["admin"])
_bearer = HTTPBearer(auto_error=False)


@error_responses({401: "invalid_service_key"})
async def get_app(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> apps.AppPrincipal:
    return await apps.authenticate_app(session, credentials.credentials if credentials else None)


AppDep = Annotated[apps.AppPrincipal, Depends(get_app)]
OperationName = Annotated[str, Field(min_length=1, max_length=64)]


class OperationRequest(RequestModel):
    team_id: uuid.UUID
    operation: OperationName = Field(examples=["deck"])
    amount: PositiveCredits | None = Field(None, description="Credits; default: the app's price for the operation")


class ValidateOut(CamelModel):
    has_credits: bool
    available_credits: Credits
    required_credits: Credits


class ConsumeRequest(OperationRequest):
    description: str | None = Field(None, max_length=500)
    metadata: dict[str, Any] = {}


class ConsumeOut(CamelModel):
    transaction_id: int
    consumed_credits: Credits
    available_credits: Credits


class ReserveRequest(OperationRequest):
    ttl_seconds: int = Field(300, description="Seconds before an unsettled hold is released (1..the server's "
                             "PIXELMINT_MAX_HOLD_SECONDS, 86,400 by default: invalid_ttl)",
                             json_schema_extra={"minimum": 1, "maximum": 86_400})


class HoldOut(CamelModel):
    hold_id: uuid.UUID
    team_id: uuid.UUID
    operation: str
    amount: Credits
    status: Literal["held", "captured", "released"]
    captured_amount: Credits | None
    expires_at: dt.datetime | None


class CaptureRequest(RequestModel):
    hold_id: uuid.UUID
    amount: NonNegativeCredits | None = None


class ReleaseRequest(RequestModel):
    hold_id: uuid.UUID


def _hold(held) -> HoldOut:
    return HoldOut(hold_id=held.id, team_id=held.team_id, operation=held.operation, amount=held.amount,
                   status=held.status, captured_amount=held.captured_amount, expires_at=held.expires_at)


NOT_AUTHORIZED: dict[int | str, dict[str, Any]] = {403: {"description": "app_not_authorized: the team has not granted this app"}}


@router.post("/validate", response_model=ValidateOut, summary="Would this operation be affordable?",
             responses=NOT_AUTHORIZED)
async def validate(body: OperationRequest, app: AppDep, session: SessionDep) -> ValidateOut:
    v = await apps.validate(session, app, team_id=body.team_id, operation=body.operation, amount=body.amount)
    return ValidateOut(has_credits=v.has_credits, available_credits=v.available_credits, required_credits=v.required_credits)


SPENDING = [rate_limit("consume", get_app), idempotent(get_app)]


@router.post("/consume", response_model=ConsumeOut, summary="Charge for an operation that succeeded",
             responses={402: {"description": "insufficient_credits"}, **NOT_AUTHORIZED}, dependencies=SPENDING)
async def consume(body: ConsumeRequest, app: AppDep, session: SessionDep, runtime: RuntimeDep) -> ConsumeOut:
    done = await apps.consume(
        session, app, team_id=body.team_id, operation=body.operation, amount=body.amount,
        description=body.description, metadata=body.metadata,
        fail_open=runtime.settings.credit_enforcement == "fail_open",
    )
    await session.commit()
    return ConsumeOut(transaction_id=done.transaction_id, consumed_credits=done.amount, available_credits=done.available_after)


@router.post("/reserve", response_model=HoldOut, status_code=status.HTTP_201_CREATED,
             summary="Hold credits for a long operation",
             responses={402: {"description": "insufficient_credits"}, **NOT_AUTHORIZED}, dependencies=SPENDING)
async def reserve(body: ReserveRequest, app: AppDep, session: SessionDep, runtime: RuntimeDep) -> HoldOut:
    held = await apps.hold(
        session, app, team_id=body.team_id, operation=body.operation, amount=body.amount,
        ttl_seconds=body.ttl_seconds, max_ttl_seconds=runtime.settings.max_hold_seconds,
        fail_open=runtime.settings.credit_enforcement == "fail_open",
    )
    await session.commit()
    return _hold(held)


SETTLED: dict[int | str, dict[str, Any]] = {409: {"description": "hold_already_settled (the body's status says how), hold_expired"}}


@router.post("/capture", response_model=HoldOut, summary="Charge a hold (all or part of it)", dependencies=SPENDING,
             responses={**NOT_AUTHORIZED, **SETTLED})
async def capture(body: CaptureRequest, app: AppDep, session: SessionDep) -> HoldOut:
    held = await apps.capture(session, app, body.hold_id, amount=body.amount)
    await session.commit()
    return _hold(held)


@router.post("/release", response_model=HoldOut, summary="Give a hold back (again: a no-op)", dependencies=SPENDING,
             responses={**NOT_AUTHORIZED, **SETTLED})
async def release(body: ReleaseRequest, app: AppDep, session: SessionDep) -> HoldOut:
    held = await apps.release(session, app, body.hold_id)
    await session.commit()
    return _hold(held)


class UsageOut(CamelModel):
    app: str
    operation: str
    count: int
    credits: Credits


class UsagePage(CamelModel):
    items: list[UsageOut]


@router.get("/usage", response_model=UsagePage, summary="Credits spent per app and operation",
            responses={**NOT_AUTHORIZED, 401: {"description": "missing_api_key, invalid_api_key, invalid_service_key"}})
async def usage(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
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


class AppGrantOut(CamelModel):
    app_id: uuid.UUID
    app_name: str
    team_id: uuid.UUID
    granted_by: Literal["admin", "team"]
    granted_at: dt.datetime


class AppGrantPage(CamelModel):
    items: list[AppGrantOut]


def _grant(g: apps.Grant) -> AppGrantOut:
    return AppGrantOut(app_id=g.app_id, app_name=g.app_name, team_id=g.team_id, granted_by=g.granted_by,
                       granted_at=g.granted_at)


@router.get("/apps", response_model=AppGrantPage, summary="The apps this team lets use its credits")
async def list_team_grants(principal: PrincipalDep, session: SessionDep) -> AppGrantPage:
    return AppGrantPage(items=[_grant(g) for g in await apps.grants(session, team_id=principal.team_id)])


@router.put("/apps/{app_id}", response_model=AppGrantOut, summary="Let an app use this team's credits",
            responses={404: {"description": "app_not_found"}})
async def grant_app(app_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> AppGrantOut:
    """Idempotent: granting a granted app keeps the grant as it was."""
    granted = await apps.authorize_app(session, team_id=principal.team_id, app_id=app_id, granted_by="team")
    await session.commit()
    return _grant(granted)


@router.delete("/apps/{app_id}", status_code=204, summary="Withdraw an app's grant (its open holds are released)")
async def revoke_app(app_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> None:
    await apps.revoke_app(session, team_id=principal.team_id, app_id=app_id)
    await session.commit()


class EstimateRequest(RequestModel):
    """One of ``referenceModelId`` or ``customModelId`` (model_required)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["referenceModelId"], "properties": {"referenceModelId": {"type": "string"}}},
        {"required": ["customModelId"], "properties": {"customModelId": {"type": "string"}}},
    ]})

    operation: Literal["image_generation", "model_creation", "model_refinement"]
    reference_model_id: str | None = Field(None, min_length=1, max_length=100)
    custom_model_id: uuid.UUID | None = None
    resolution: str = Field("1024x1024", json_schema_extra={"pattern": RESOLUTION_PATTERN})
    quality: Literal["standard", "hd"] = "standard"
    num_images: int = Field(1, json_schema_extra={"minimum": 1, "maximum": 4})
    training_images: int = Field(5, ge=1, le=50)
    iteration: int | None = Field(None, ge=0, le=100, description="Refinement iteration; default: the model's version")


class EstimateOut(CamelModel):
    operation: str
    estimated_credits: Credits


@router.post("/estimate", response_model=EstimateOut, summary="Price an operation before queueing it",
             responses={409: {"description": "model_not_ready"}})
async def estimate(body: EstimateRequest, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep) -> EstimateOut:
    from pixelmint.catalog import service as catalog
    from pixelmint.custom_models import service as custom_models
    from pixelmint.jobs.service import parse_resolution

    pricing = await current_pricing(session)
    complexity, version = None, 0
    if body.custom_model_id is not None:
        model = await custom_models.get_model(session, principal, body.custom_model_id)
        info = await catalog.get_pricing_info(session, model.reference_model_id, require_active=False)
        complexity, version = info.complexity_factor, model.version
    elif body.reference_model_id is not None:
        complexity = (await catalog.get_pricing_info(session, body.reference_model_id)).complexity_factor
    else:
        raise InvalidRequest("Give referenceModelId or customModelId.", code="model_required")
    if body.operation == "image_generation":
        if not 1 <= body.num_images <= runtime.settings.max_images_per_request:
            raise InvalidRequest("numImages is out of range.", code="invalid_num_images", field="numImages")
        width, height = parse_resolution(body.resolution, runtime.settings)
        cost = pricing.image_generation(width=width, height=height, quality=body.quality, complexity=complexity,
                                        num_images=body.num_images)
    elif body.operation == "model_creation":
        cost = pricing.model_creation(complexity=complexity, training_images=max(0, body.training_images))
    else:
        cost = pricing.model_refinement(iteration=body.iteration if body.iteration is not None else version,
                                        complexity=complexity)
    return EstimateOut(operation=body.operation, estimated_credits=cost)


class AppIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    operations: dict[OperationName, NonNegativeCredits] = Field(default_factory=dict, examples=[{"deck": 10}])
    team_ids: list[uuid.UUID] = Field(default_factory=list, description="Teams that grant the app at once")


class AppCreated(CamelModel):
    app_id: uuid.UUID
    service_key: str


@admin_router.post("", response_model=AppCreated, status_code=201, summary="Register an app (service key shown once)",
                   responses={409: {"description": "app_exists"}})
async def create_app(body: AppIn, admin: AdminDep, session: SessionDep) -> AppCreated:
    created = await apps.register_app(session, name=body.name, operations=body.operations)
    for team_id in body.team_ids:
        await apps.authorize_app(session, team_id=team_id, app_id=created.app_id, granted_by="admin")
    await session.commit()
    return AppCreated(app_id=created.app_id, service_key=created.service_key)


@admin_router.put("/{app_id}/operations", status_code=204, summary="Set an app's operation costs",
                  responses={404: {"description": "app_not_found"}})
async def set_operations(app_id: uuid.UUID, body: RequestMap[OperationName, NonNegativeCredits], admin: AdminDep,
                         session: SessionDep) -> None:
    await apps.set_operation_costs(session, app_id, body.root)
    await session.commit()


@admin_router.get("/{app_id}/teams", response_model=AppGrantPage, summary="The teams that let an app use their credits")
async def list_app_grants(app_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> AppGrantPage:
    return AppGrantPage(items=[_grant(g) for g in await apps.grants(session, app_id=app_id)])


@admin_router.put("/{app_id}/teams/{team_id}", response_model=AppGrantOut, summary="Let an app use a team's credits",
                  responses={404: {"description": "app_not_found, team_not_found"}})
async def admin_grant_app(app_id: uuid.UUID, team_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> AppGrantOut:
    granted = await apps.authorize_app(session, team_id=team_id, app_id=app_id, granted_by="admin")
    await session.commit()
    return _grant(granted)


@admin_router.delete("/{app_id}/teams/{team_id}", status_code=204,
                     summary="Withdraw an app's grant on a team (its open holds are released)")
async def admin_revoke_app(app_id: uuid.UUID, team_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> None:
    await apps.revoke_app(session, team_id=team_id, app_id=app_id)
    await session.commit()


pricing_admin_router = APIRouter(prefix="/api/v1/admin/pricing", tags=["admin"])


@pricing_admin_router.get("", summary="The pricing table in force (defaults merged with overrides)")
async def get_pricing(admin: AdminDep, session: SessionDep) -> dict[str, Any]:
    pricing = await current_pricing(session)
    return pricing_as_config(pricing)


@pricing_admin_router.put("/{operation}", summary="Replace one operation's prices (new jobs only)")
async def put_pricing(
    operation: Literal["image_generation", "model_creation", "model_refinement"],
    body: RequestMap[str, Any],
    admin: AdminDep,
    session: SessionDep,
) -> dict[str, Any]:
    try:
        pricing = await set_pricing(session, operation, body.root)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidRequest(str(exc), code="invalid_pricing") from None
    await session.commit()
    return pricing_as_config(pricing)


class TeamBalanceOut(CamelModel):
    team_id: uuid.UUID
    available_credits: Credits
    allocation_credits: Credits
    bonus_credits: Credits
    reserved_credits: Credits


@router.get("/team-balance", response_model=TeamBalanceOut, summary="A team's balance, for an app",
            responses=NOT_AUTHORIZED)
async def team_balance(
    app: AppDep, session: SessionDep, team_id: Annotated[uuid.UUID, Query(alias="teamId")]
) -> TeamBalanceOut:
    await apps.require_grant(session, app, team_id)
    b = await apps.team_balance(session, team_id)
    return TeamBalanceOut(
        team_id=team_id, available_credits=b.allocation_credits + b.bonus_credits,
        allocation_credits=b.allocation_credits, bonus_credits=b.bonus_credits, reserved_credits=b.reserved_credits,
    )
