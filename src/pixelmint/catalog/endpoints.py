"""``/api/v1/reference-models``: the catalog; ``/api/v1/admin/reference-models``: its upkeep."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field, StrictBool

from pixelmint.accounts.auth import PrincipalDep
from pixelmint.catalog import service
from pixelmint.catalog.errors import ModelExists
from pixelmint.catalog.tables import ReferenceModel
from pixelmint.kit.errors import responses
from pixelmint.kit.http import AdminDep, SessionDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, integer, string
from pixelmint.kit.schemas import CamelModel, Credits, RequestModel, decimal_json_schema
from pixelmint.storage.deps import StorageDep, UrlSignerDep
from pixelmint.storage.schemas import UrlSigner

router = APIRouter(prefix="/api/v1/reference-models", tags=["catalog"])
admin_router = APIRouter(prefix="/api/v1/admin/reference-models", tags=["admin"])


class PreviewOut(CamelModel):
    url: str
    width: int
    height: int
    seed: int


class ReferenceModelOut(CamelModel):
    id: str
    name: str
    category: str
    description: str
    complexity_factor: Credits
    popularity: int
    characteristics: dict[str, Any]
    provider: str
    provider_models: dict[str, str]
    preview_images: list[PreviewOut]
    is_active: bool


class ReferenceModelPage(CamelModel):
    items: list[ReferenceModelOut]
    next_cursor: str | None


def present(model: ReferenceModel, urls: UrlSigner) -> ReferenceModelOut:
    return ReferenceModelOut(
        id=model.id, name=model.name, category=model.category, description=model.description,
        complexity_factor=model.complexity_factor, popularity=model.popularity,
        characteristics=model.characteristics, provider=model.provider, provider_models=model.provider_models,
        preview_images=[
            PreviewOut(url=urls.url(p["key"]),
                       width=p["width"], height=p["height"], seed=p["seed"])
            for p in model.preview_images
        ],
        is_active=model.is_active,
    )


@router.get("", response_model=ReferenceModelPage, summary="Browse the reference-model catalog")
async def list_reference_models(
    principal: PrincipalDep,
    session: SessionDep,
    urls: UrlSignerDep,
    category: Annotated[Literal[service.CATEGORIES] | None, Query()] = None,  # type: ignore[valid-type]
    q: Annotated[str | None, Query(max_length=200, description="Text search in name, description, characteristics")] = None,
    sort: Annotated[Literal["popularity", "name"], Query()] = "popularity",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> ReferenceModelPage:
    after = tuple(decode_cursor(cursor, string if sort == "name" else integer, string)) if cursor else None
    page = await service.list_models(session, category=category, search=q, sort=sort, limit=limit, after=after)
    return ReferenceModelPage(
        items=[present(m, urls) for m in page.items],
        next_cursor=encode_cursor(*page.next_after) if page.next_after else None,
    )


@router.get("/{model_id}", response_model=ReferenceModelOut, summary="One reference model")
async def get_reference_model(
    model_id: str, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep
) -> ReferenceModelOut:
    return present(await service.get_model(session, model_id), urls)


ComplexityFactor = Annotated[Decimal, Field(
    gt=0, le=10, max_digits=4, decimal_places=2, allow_inf_nan=False,
    json_schema_extra=decimal_json_schema(r"^(?:[1-9](?:\.[0-9]{1,2})?|0\.(?:[1-9][0-9]?|0[1-9])|10(?:\.00?)?)$"),
)]
Popularity = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
ProviderName = Annotated[str, Field(min_length=1, max_length=50, examples=["default", "fal"])]
ProviderModels = dict[Annotated[str, Field(min_length=1, max_length=50)], Annotated[str, Field(max_length=200)]]


class ReferenceModelIn(RequestModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,99}$", examples=["fashion-noir"])
    name: str = Field(min_length=1, max_length=200)
    category: Literal[service.CATEGORIES]  # type: ignore[valid-type]
    description: str = Field("", max_length=2000)
    complexity_factor: ComplexityFactor
    popularity: Popularity = 0
    characteristics: dict[str, Any] = {}
    provider: ProviderName = "default"
    provider_models: ProviderModels = {}


def _omittable_fields(schema: dict[str, Any]) -> None:
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


class ReferenceModelPatch(RequestModel):
    """Only the fields given change; none may be null (omit a field to keep it)."""

    model_config = ConfigDict(json_schema_extra=_omittable_fields)

    name: Annotated[str, Field(min_length=1, max_length=200)] = None  # type: ignore[assignment]
    category: Literal[service.CATEGORIES] = None  # type: ignore[valid-type]
    description: Annotated[str, Field(max_length=2000)] = None  # type: ignore[assignment]
    complexity_factor: ComplexityFactor = None  # type: ignore[assignment]
    popularity: Popularity = None  # type: ignore[assignment]
    characteristics: dict[str, Any] = None  # type: ignore[assignment]
    provider: ProviderName = None  # type: ignore[assignment]
    provider_models: ProviderModels = None  # type: ignore[assignment]
    is_active: StrictBool = None  # type: ignore[assignment]


@admin_router.post("", response_model=ReferenceModelOut, status_code=201, summary="Add a reference model",
                   responses=responses(ModelExists))
async def create_reference_model(
    body: ReferenceModelIn, admin: AdminDep, session: SessionDep, storage: StorageDep, urls: UrlSignerDep
) -> ReferenceModelOut:
    model = await service.create_model(session, body.model_dump())
    await service.seed_previews(session, storage)
    return present(model, urls)


@admin_router.patch("/{model_id}", response_model=ReferenceModelOut, summary="Change or (de)activate a reference model")
async def update_reference_model(
    model_id: str, body: ReferenceModelPatch, admin: AdminDep, session: SessionDep, urls: UrlSignerDep
) -> ReferenceModelOut:
    model = await service.update_model(session, model_id, body.model_dump(exclude_unset=True))
    return present(model, urls)


@admin_router.delete("/{model_id}", response_model=ReferenceModelOut, summary="Deactivate a reference model")
async def deactivate_reference_model(
    model_id: str, admin: AdminDep, session: SessionDep, urls: UrlSignerDep
) -> ReferenceModelOut:
    model = await service.update_model(session, model_id, {"is_active": False})
    return present(model, urls)
