"""The reference-model catalog: seeding from the data file and lookups."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.catalog.tables import ReferenceModel
from pixelmint.kit.errors import NotFound


def load_seed_data() -> list[dict]:
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
            "provider": m.get("provider", "procedural"),
            "provider_model": m.get("providerModel"),
        }
        for m in load_seed_data()
    ]
    stmt = insert(ReferenceModel).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ReferenceModel.id],
        set_={c: stmt.excluded[c] for c in rows[0] if c != "id"},
    )
    await session.execute(stmt)
    return len(rows)


async def list_models(session: AsyncSession, *, category: str | None = None) -> list[ReferenceModel]:
    query = select(ReferenceModel).where(ReferenceModel.is_active)
    if category:
        query = query.where(ReferenceModel.category == category)
    return list((await session.scalars(query.order_by(ReferenceModel.popularity.desc(), ReferenceModel.id))).all())


async def get_active_model(session: AsyncSession, model_id: str) -> ReferenceModel:
    """An active reference model. Raises ``NotFound`` (model_not_found)."""
    model = await session.get(ReferenceModel, model_id)
    if model is None or not model.is_active:
        raise NotFound(f"No reference model {model_id!r}.", code="model_not_found")
    return model


@dataclass(frozen=True)
class ModelPricingInfo:
    id: str
    complexity_factor: Decimal
    provider: str


_CACHE_SECONDS = 5.0
_pricing_cache: dict[tuple[str, str], tuple[float, ModelPricingInfo | None]] = {}


async def get_pricing_info(session: AsyncSession, model_id: str) -> ModelPricingInfo:
    """What generation needs of an active reference model, cached per process for 5 seconds
    (the catalog changes rarely; a deactivation takes effect within that time). Raises
    ``NotFound`` (model_not_found)."""
    key = (str(session.bind.url), model_id)
    now = time.monotonic()
    hit = _pricing_cache.get(key)
    if hit is None or hit[0] < now:
        model = await session.get(ReferenceModel, model_id)
        info = (
            ModelPricingInfo(model.id, model.complexity_factor, model.provider)
            if model is not None and model.is_active
            else None
        )
        hit = (now + _CACHE_SECONDS, info)
        _pricing_cache[key] = hit
    if hit[1] is None:
        raise NotFound(f"No reference model {model_id!r}.", code="model_not_found")
    return hit[1]
