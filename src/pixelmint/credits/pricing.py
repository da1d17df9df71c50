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
        raise ValueError(f"{width}x{height} is above the largest priced resolution")

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
