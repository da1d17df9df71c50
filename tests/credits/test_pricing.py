from decimal import Decimal

import pytest

from pixelmint.credits.pricing import DEFAULT_PRICING as P
from pixelmint.kit.errors import InvalidRequest


def test_image_generation_formula() -> None:
    # 5 × 1.5 (1024²) × 1.5 (hd) × 1.2 complexity × 1.2 × 2 images = 32.40
    assert P.image_generation(width=1024, height=1024, quality="hd", complexity=Decimal("1.2"), num_images=2) == Decimal("32.40")
    # 5 × 1.0 (512²) × 1.0 × 0.8 × 1.2 × 1 = 4.80
    assert P.image_generation(width=512, height=512, quality="standard", complexity=Decimal("0.8"), num_images=1) == Decimal("4.80")
    assert P.image_generation(width=2048, height=2048, quality="standard", complexity=Decimal("1"), num_images=1) == Decimal("15.00")


def test_resolution_above_largest_tier_is_refused() -> None:
    with pytest.raises(InvalidRequest) as err:
        P.resolution_multiplier(4096, 4096)
    assert err.value.code == "resolution_not_priced"


def test_model_creation_and_refinement_formulas() -> None:
    # 50 × 1.2 × 1.5 + 0.5 × (12 − 5) = 93.50
    assert P.model_creation(complexity=Decimal("1.2"), training_images=12) == Decimal("93.50")
    assert P.model_creation(complexity=Decimal("1"), training_images=3) == Decimal("75.00")
    # 30 × 1.2² × 1.0 × 1.1 = 47.52
    assert P.model_refinement(iteration=2, complexity=Decimal("1")) == Decimal("47.52")
