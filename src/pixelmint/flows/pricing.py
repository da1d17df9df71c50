"""What an operation would cost, before it is queued: the pricing formulas (credits) applied to a
reference model (catalog) or a custom model's version (custom models)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal
from pixelmint.catalog import service as catalog
from pixelmint.credits.pricing import current_pricing
from pixelmint.custom_models import service as custom_models
from pixelmint.jobs.errors import InvalidNumImages, ModelRequired
from pixelmint.jobs.service import parse_resolution
from pixelmint.settings import Settings


async def estimate(
    session: AsyncSession,
    principal: Principal,
    *,
    operation: Literal["image_generation", "model_creation", "model_refinement"],
    reference_model_id: str | None,
    custom_model_id: uuid.UUID | None,
    resolution: str,
    quality: str,
    num_images: int,
    training_images: int,
    iteration: int | None,
    settings: Settings,
) -> Decimal:
    """The credits ``operation`` would reserve now, for the caller's custom model (its reference
    model's complexity; a refinement's iteration defaults to the model's version) or a reference
    model. Raises ``InvalidRequest`` (model_required, invalid_num_images, invalid_resolution),
    ``NotFound`` (model_not_found)."""
    pricing = await current_pricing(session)
    complexity, version = None, 0
    if custom_model_id is not None:
        model = await custom_models.get_model(session, principal, custom_model_id)
        info = await catalog.get_pricing_info(session, model.reference_model_id, require_active=False)
        complexity, version = info.complexity_factor, model.version
    elif reference_model_id is not None:
        complexity = (await catalog.get_pricing_info(session, reference_model_id)).complexity_factor
    else:
        raise ModelRequired("Give referenceModelId or customModelId.")
    if operation == "image_generation":
        if not 1 <= num_images <= settings.max_images_per_request:
            raise InvalidNumImages("numImages is out of range.", field="numImages")
        width, height = parse_resolution(resolution, settings)
        return pricing.image_generation(width=width, height=height, quality=quality, complexity=complexity,
                                        num_images=num_images)
    if operation == "model_creation":
        return pricing.model_creation(complexity=complexity, training_images=max(0, training_images))
    return pricing.model_refinement(iteration=iteration if iteration is not None else version, complexity=complexity)
