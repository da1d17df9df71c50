"""``/api/v1/reference-models``: the catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pixelmint.api.deps import PrincipalDep, SessionDep
from pixelmint.catalog import service
from pixelmint.kit.schemas import CamelModel, Credits

router = APIRouter(prefix="/api/v1/reference-models", tags=["catalog"])


class ReferenceModelOut(CamelModel):
    id: str
    name: str
    category: str
    description: str
    complexity_factor: Credits
    popularity: int
    characteristics: dict[str, Any]
    provider: str


class ReferenceModelList(CamelModel):
    items: list[ReferenceModelOut]


@router.get("", response_model=ReferenceModelList, summary="The reference-model catalog")
async def list_reference_models(
    principal: PrincipalDep, session: SessionDep, category: str | None = None
) -> ReferenceModelList:
    models = await service.list_models(session, category=category)
    return ReferenceModelList(items=[ReferenceModelOut.model_validate(m) for m in models])


@router.get("/{model_id}", response_model=ReferenceModelOut, summary="One reference model")
async def get_reference_model(model_id: str, principal: PrincipalDep, session: SessionDep) -> ReferenceModelOut:
    return ReferenceModelOut.model_validate(await service.get_active_model(session, model_id))
