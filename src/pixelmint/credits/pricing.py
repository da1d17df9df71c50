"""Cost formulas, in credits (``Decimal``, two places, rounded half up).

Defaults are the formulas of ``../shared/DESIGN.md`` ("Credits: the rules"):

- image generation = 5 × resolution multiplier × quality multiplier × model complexity × 1.2 × images
- model creation   = 50 × reference complexity × 1.5 + 0.5 × (training images beyond 5)
- model refinement = 30 × 1.2^iteration × model complexity × 1.1

The design leaves the resolution and quality multipliers open; ours are tiers by pixel count
(up to 512×512: 1.0, up to 1024×1024: 1.5, up to 2048×2048: 2.5) and standard 1.0 / hd 1.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pixelmint.credits.errors import ResolutionNotPriced
from pixelmint.kit import cache
from pixelmint.kit.cache import TtlCache

CENT = Decimal("0.01")


def to_credits(value: Decimal | int | float | str) -> Decimal:
    """Round to two places, half up: the only rounding rule for amounts."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Pricing:
    image_base: Decimal = Decimal("5")
    image_factor: Decimal = Decimal("1.2")
    # (max pixels, multiplier), ascending; a resolution above the last tier is not priced.
    resolution_tiers: tuple[tuple[int, Decimal], ...] = (
        (512 * 512, Decimal("1.0")),
        (1024 * 1024, Decimal("1.5")),
        (2048 * 2048, Decimal("2.5")),
    )
    quality_multipliers: dict[str, Decimal] = field(
        default_factory=lambda: {"standard": Decimal("1.0"), "hd": Decimal("1.5")}
    )
    creation_base: Decimal = Decimal("50")
    creation_factor: Decimal = Decimal("1.5")
    creation_per_extra_image: Decimal = Decimal("0.5")
    creation_included_images: int = 5
    refinement_base: Decimal = Decimal("30")
    refinement_growth: Decimal = Decimal("1.2")
    refinement_factor: Decimal = Decimal("1.1")

    def resolution_multiplier(self, width: int, height: int) -> Decimal:
        pixels = width * height
        for max_pixels, multiplier in self.resolution_tiers:
            if pixels <= max_pixels:
                return multiplier
        raise ResolutionNotPriced(
            f"{width}x{height} is above the largest resolution the pricing table prices.", field="resolution",
        )

    def image_generation(
        self, *, width: int, height: int, quality: str, complexity: Decimal, num_images: int
    ) -> Decimal:
        """Credits for ``num_images`` images of ``width``×``height`` pixels at ``quality``."""
        return to_credits(
            self.image_base
            * self.resolution_multiplier(width, height)
            * self.quality_multipliers[quality]
            * complexity
            * self.image_factor
            * num_images
        )

    def model_creation(self, *, complexity: Decimal, training_images: int) -> Decimal:
        extra = max(0, training_images - self.creation_included_images)
        return to_credits(
            self.creation_base * complexity * self.creation_factor + self.creation_per_extra_image * extra
        )

    def model_refinement(self, *, iteration: int, complexity: Decimal) -> Decimal:
        return to_credits(
            self.refinement_base * self.refinement_growth**iteration * complexity * self.refinement_factor
        )


DEFAULT_PRICING = Pricing()


# ---------------------------------------------------------------------------------------------
# The pricing table: admins change prices without a deploy; a job keeps the price it was
# reserved at (its estimated_credits), so a change only affects new work.

PRICING_FIELDS: dict[str, dict[str, str]] = {
    "image_generation": {
        "base": "image_base", "factor": "image_factor", "resolutionTiers": "resolution_tiers",
        "qualityMultipliers": "quality_multipliers",
    },
    "model_creation": {
        "base": "creation_base", "factor": "creation_factor", "perExtraImage": "creation_per_extra_image",
        "includedImages": "creation_included_images",
    },
    "model_refinement": {"base": "refinement_base", "growth": "refinement_growth", "factor": "refinement_factor"},
}
# The pricing table in force, per database (kit/cache.py: "pricing", cleared by set_pricing here at
# once and in every other process by notification; at most 5 s old if a notification is missed).
_CACHE_SECONDS = 5.0
_cache: TtlCache[Pricing] = TtlCache("pricing", _CACHE_SECONDS)


def pricing_from_config(rows: dict[str, dict[str, Any]]) -> Pricing:
    """A ``Pricing`` from pricing-table rows ``{operation: {camelCaseField: value}}`` over the
    defaults. Raises ``ValueError`` for an unknown operation or field or a bad value."""
    values: dict[str, Any] = {}
    for operation, config in rows.items():
        fields = PRICING_FIELDS.get(operation)
        if fields is None:
            raise ValueError(f"unknown operation {operation!r}; known: {', '.join(PRICING_FIELDS)}")
        for key, value in config.items():
            if key not in fields:
                raise ValueError(f"unknown field {key!r} for {operation}; known: {', '.join(fields)}")
            name = fields[key]
            if name == "resolution_tiers":
                tiers = tuple(sorted((int(p), Decimal(str(m))) for p, m in value))
                if not tiers or any(m <= 0 or p <= 0 for p, m in tiers):
                    raise ValueError("resolutionTiers must be [[maxPixels, multiplier > 0], ...]")
                values[name] = tiers
            elif name == "quality_multipliers":
                multipliers = {str(k): Decimal(str(v)) for k, v in value.items()}
                if set(multipliers) != {"standard", "hd"} or any(v <= 0 for v in multipliers.values()):
                    raise ValueError("qualityMultipliers must give standard and hd, both > 0")
                values[name] = multipliers
            elif name == "creation_included_images":
                values[name] = int(value)
            else:
                number = Decimal(str(value))
                if number < 0:
                    raise ValueError(f"{key} must be >= 0")
                values[name] = number
    return Pricing(**values)


async def current_pricing(session: Any) -> Pricing:
    """The prices in force: the pricing table over the defaults, cached per process (above)."""
    from sqlalchemy import text

    key = cache.database_key(session)
    pricing = _cache.get(key)
    if pricing is None:
        generation = _cache.generation
        rows = await session.execute(text("SELECT operation, config FROM credit_pricing_config"))
        pricing = pricing_from_config({r.operation: r.config for r in rows})
        _cache.put(key, pricing, generation)
    return pricing


async def set_pricing(session: Any, operation: str, config: dict[str, Any]) -> Pricing:
    """Admin: replace one operation's row in the pricing table (validated first)."""
    import json

    from sqlalchemy import text

    pricing_from_config({operation: config})
    await session.execute(
        text("""INSERT INTO credit_pricing_config (operation, config) VALUES (:op, CAST(:config AS jsonb))
                ON CONFLICT (operation) DO UPDATE SET config = EXCLUDED.config, updated_at = now()"""),
        {"op": operation, "config": json.dumps(config)},
    )
    await cache.invalidate(session, "pricing")
    rows = await session.execute(text("SELECT operation, config FROM credit_pricing_config"))
    return pricing_from_config({r.operation: r.config for r in rows})


def pricing_as_config(pricing: Pricing) -> dict[str, dict[str, Any]]:
    """The pricing table as JSON-friendly rows (the shape ``pricing_from_config`` reads)."""
    rows: dict[str, dict[str, Any]] = {}
    for operation, fields in PRICING_FIELDS.items():
        row: dict[str, Any] = {}
        for key, name in fields.items():
            value = getattr(pricing, name)
            if name == "resolution_tiers":
                value = [[p, float(m)] for p, m in value]
            elif name == "quality_multipliers":
                value = {k: float(v) for k, v in value.items()}
            elif isinstance(value, Decimal):
                value = float(value)
            row[key] = value
        rows[operation] = row
    return rows
