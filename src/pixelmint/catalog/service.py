"""The reference-model catalog: seeding (rows and preview images), search, admin changes.

Seeding upserts the data file ``catalog/data/reference_models.json`` (descriptive fields only: an
admin's deactivation or edits of provider settings survive a re-seed) and renders each model's
preview images once with the ``procedural`` renderer into storage, like any other image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.catalog.errors import ModelExists, ModelNotFound
from pixelmint.catalog.tables import ReferenceModel
from pixelmint.kit import cache
from pixelmint.kit.cache import TtlCache
from pixelmint.providers.base import GenerationRequest
from pixelmint.providers.procedural import render
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage

CATEGORIES = ("fashion", "fitness", "beauty", "lifestyle", "business")
PREVIEW_SIDE = 256  # pixels
PREVIEW_SEEDS = (11, 23)


def load_seed_data() -> list[dict[str, Any]]:
    with resources.files("pixelmint.catalog").joinpath("data/reference_models.json").open() as f:
        return json.load(f)


async def seed(session: AsyncSession) -> int:
    """Upsert the catalog data file into ``reference_models``. Returns the number of models."""
    rows = [
        {
            "id": m["id"],
            "name": m["name"],
            "category": m["category"],
            "description": m.get("description", ""),
            "complexity_factor": Decimal(str(m["complexityFactor"])),
            "popularity": m.get("popularity", 0),
            "characteristics": m.get("characteristics", {}),
            "provider_models": m.get("providerModels", {}),
        }
        for m in load_seed_data()
    ]
    stmt = insert(ReferenceModel).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ReferenceModel.id],
        set_={c: stmt.excluded[c] for c in ("name", "category", "description", "complexity_factor", "characteristics")},
    )
    await session.execute(stmt)
    return len(rows)


async def seed_previews(session: AsyncSession, storage: Storage) -> int:
    """Render and store preview images for models that have none. Returns how many models got
    previews. Each preview is ``PREVIEW_SIDE``² pixels, deterministic per model and seed."""
    models = (await session.scalars(select(ReferenceModel).where(ReferenceModel.preview_images == []))).all()
    for model in models:
        previews = []
        for seed_value in PREVIEW_SEEDS:
            request = GenerationRequest(
                prompt=f"{model.name}. {model.description}", negative_prompt=None, width=PREVIEW_SIDE,
                height=PREVIEW_SIDE, num_images=1, seed=seed_value, quality="standard", model_key=model.id,
            )
            image = render(request, 0)
            key = f"catalog/{model.id}/preview-{seed_value}.png"
            await storage.put(key, image.data, content_type=image.content_type, metadata={"model": model.id})
            previews.append({"key": key, "width": image.width, "height": image.height, "seed": seed_value})
        model.preview_images = previews
    await session.flush()
    return len(models)


@dataclass(frozen=True)
class CatalogPage:
    items: list[ReferenceModel]
    next_after: tuple[Any, str] | None  # (sort value, id) of the last item when more follow


async def list_models(
    session: AsyncSession,
    *,
    category: str | None = None,
    search: str | None = None,
    sort: str = "popularity",
    limit: int = 20,
    after: tuple[Any, str] | None = None,
    include_inactive: bool = False,
) -> CatalogPage:
    """Active models filtered by category and free text (name, description, characteristics),
    sorted by ``popularity`` (most popular first) or ``name``, with keyset pagination on
    (sort value, id)."""
    query = select(ReferenceModel)
    if not include_inactive:
        query = query.where(ReferenceModel.is_active)
    if category:
        query = query.where(ReferenceModel.category == category)
    if search:
        pattern = f"%{search.strip()}%"
        query = query.where(
            or_(
                ReferenceModel.name.ilike(pattern),
                ReferenceModel.description.ilike(pattern),
                ReferenceModel.characteristics.cast(ReferenceModel.description.type).ilike(pattern),
            )
        )
    if sort == "name":
        if after is not None:
            query = query.where(
                or_(ReferenceModel.name > after[0], and_(ReferenceModel.name == after[0], ReferenceModel.id > after[1]))
            )
        query = query.order_by(ReferenceModel.name, ReferenceModel.id)
    else:
        if after is not None:
            query = query.where(
                or_(
                    ReferenceModel.popularity < after[0],
                    and_(ReferenceModel.popularity == after[0], ReferenceModel.id > after[1]),
                )
            )
        query = query.order_by(ReferenceModel.popularity.desc(), ReferenceModel.id)
    rows = list((await session.scalars(query.limit(limit + 1))).all())
    items = rows[:limit]
    next_after = None
    if len(rows) > limit:
        last = items[-1]
        next_after = (last.name if sort == "name" else last.popularity, last.id)
    return CatalogPage(items, next_after)


async def get_model(session: AsyncSession, model_id: str, *, include_inactive: bool = False) -> ReferenceModel:
    """A reference model (active only, unless asked). Raises ``NotFound`` (model_not_found)."""
    model = await session.get(ReferenceModel, model_id)
    if model is None or not (model.is_active or include_inactive):
        raise ModelNotFound(f"No reference model {model_id!r}.")
    return model


async def model_ids(session: AsyncSession, *, include_inactive: bool = False) -> list[str]:
    """Every reference model's id (active only, unless asked)."""
    query = select(ReferenceModel.id)
    if not include_inactive:
        query = query.where(ReferenceModel.is_active)
    return list((await session.scalars(query)).all())


@dataclass(frozen=True)
class ModelPricingInfo:
    id: str
    complexity_factor: Decimal
    provider: str
    provider_models: dict[str, str]
    is_active: bool


def provider_for(model: ModelPricingInfo, settings: Settings) -> tuple[str, str | None]:
    """(provider name, the model's id at that provider) for a reference model."""
    name = settings.default_provider if model.provider == "default" else model.provider
    return name, model.provider_models.get(name)


# What generation needs of each model, per database (kit/cache.py: "catalog", cleared by the admin
# changes here at once and in every other process by notification; at most 5 s old if one is missed).
_CACHE_SECONDS = 5.0
_pricing_cache: TtlCache[ModelPricingInfo] = TtlCache("catalog", _CACHE_SECONDS)


async def get_pricing_info(session: AsyncSession, model_id: str, *, require_active: bool = True) -> ModelPricingInfo:
    """What generation needs of a reference model, cached per process (above: an admin change
    takes effect at once everywhere, at worst within 5 seconds). Raises ``NotFound``
    (model_not_found) for an unknown model, or an inactive one when ``require_active`` (custom
    models trained on a deactivated model keep working)."""
    key = (cache.database_key(session), model_id)
    info = _pricing_cache.get(key)
    if info is None:
        generation = _pricing_cache.generation
        model = await session.get(ReferenceModel, model_id)
        if model is not None:
            info = ModelPricingInfo(
                model.id, model.complexity_factor, model.provider, dict(model.provider_models), model.is_active
            )
            _pricing_cache.put(key, info, generation)
    if info is None or (require_active and not info.is_active):
        raise ModelNotFound(f"No reference model {model_id!r}.")
    return info


EDITABLE = (
    "name", "category", "description", "complexity_factor", "popularity", "characteristics", "provider",
    "provider_model", "provider_models", "is_active",
)


async def create_model(session: AsyncSession, values: dict[str, Any]) -> ReferenceModel:
    """Admin: add a model. Raises ``Conflict`` (model_exists) for a taken id."""
    if await session.get(ReferenceModel, values["id"]) is not None:
        raise ModelExists(f"Reference model {values['id']!r} already exists.")
    model = ReferenceModel(id=values["id"], **{k: v for k, v in values.items() if k in EDITABLE})
    session.add(model)
    await session.flush()
    await session.refresh(model)
    return model


async def update_model(session: AsyncSession, model_id: str, values: dict[str, Any]) -> ReferenceModel:
    """Admin: change fields (``is_active=False`` deactivates: it disappears from the catalog and
    cannot be generated from; existing jobs and custom models keep working)."""
    model = await get_model(session, model_id, include_inactive=True)
    for name, value in values.items():
        if name in EDITABLE:
            setattr(model, name, value)
    await session.flush()
    await cache.invalidate(session, "catalog")
    return model
