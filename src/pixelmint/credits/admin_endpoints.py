"""Admin only (``Authorization: Bearer $PIXELMINT_ADMIN_TOKEN``): ``/api/v1/admin/apps`` (credit-API
apps, their prices and grants) and ``/api/v1/admin/pricing`` (the pricing table)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter

from pixelmint.accounts.errors import TeamNotFound
from pixelmint.credits import apps
from pixelmint.credits.errors import AppExists, AppNotFound, InvalidPricing
from pixelmint.credits.pricing import current_pricing, pricing_as_config, set_pricing
from pixelmint.credits.schemas import AppCreated, AppGrantOut, AppGrantPage, AppIn, OperationName, present_grant
from pixelmint.kit.errors import responses
from pixelmint.kit.http import AdminDep, SessionDep
from pixelmint.kit.schemas import NonNegativeCredits, RequestMap

admin_router = APIRouter(prefix="/api/v1/admin/apps", tags=["admin"])


@admin_router.post("", response_model=AppCreated, status_code=201, summary="Register an app (service key shown once)",
                   responses=responses(AppExists))
async def create_app(body: AppIn, admin: AdminDep, session: SessionDep) -> AppCreated:
    created = await apps.register_app(session, name=body.name, operations=body.operations)
    for team_id in body.team_ids:
        await apps.authorize_app(session, team_id=team_id, app_id=created.app_id, granted_by="admin")
    return AppCreated(app_id=created.app_id, service_key=created.service_key)


@admin_router.put("/{app_id}/operations", status_code=204, summary="Set an app's operation costs",
                  responses=responses(AppNotFound))
async def set_operations(app_id: uuid.UUID, body: RequestMap[OperationName, NonNegativeCredits], admin: AdminDep,
                         session: SessionDep) -> None:
    await apps.set_operation_costs(session, app_id, body.root)


@admin_router.get("/{app_id}/teams", response_model=AppGrantPage, summary="The teams that let an app use their credits")
async def list_app_grants(app_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> AppGrantPage:
    return AppGrantPage(items=[present_grant(g) for g in await apps.grants(session, app_id=app_id)])


@admin_router.put("/{app_id}/teams/{team_id}", response_model=AppGrantOut, summary="Let an app use a team's credits",
                  responses=responses(AppNotFound, TeamNotFound))
async def admin_grant_app(app_id: uuid.UUID, team_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> AppGrantOut:
    return present_grant(await apps.authorize_app(session, team_id=team_id, app_id=app_id, granted_by="admin"))


@admin_router.delete("/{app_id}/teams/{team_id}", status_code=204,
                     summary="Withdraw an app's grant on a team (its open holds are released)")
async def admin_revoke_app(app_id: uuid.UUID, team_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> None:
    await apps.revoke_app(session, team_id=team_id, app_id=app_id)


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
        raise InvalidPricing(str(exc)) from None
    return pricing_as_config(pricing)
