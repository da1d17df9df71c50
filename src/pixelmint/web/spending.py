"""What the pages that spend credits share (catalog, custom models, generate): the balance beside
a cost estimate, the words for a refusal to spend (402 insufficient_credits, 403
plan_upgrade_required), and whether images come from the ``procedural`` placeholder renderer
(``_notices.html``).

Estimates are ``flows/pricing.estimate``, the same function as ``POST /api/v1/credits/estimate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal
from pixelmint.credits import service as credits
from pixelmint.credits.errors import InsufficientCredits
from pixelmint.custom_models.errors import PlanUpgradeRequired
from pixelmint.kit.errors import PixelmintError
from pixelmint.providers.procedural import ProceduralProvider
from pixelmint.settings import Settings
from pixelmint.web.templating import credits as show_credits

WHAT_TO_DO = (
    "An owner or admin can upgrade the plan or buy credits on the Credits page; without Stripe, a server "
    "administrator grants credits (pixelmint admin grant)."
)


def placeholder_images(settings: Settings) -> bool:
    """True while the ``procedural`` placeholder renders images (no image model configured)."""
    return settings.default_provider == ProceduralProvider.name


async def available_credits(session: AsyncSession, principal: Principal) -> Decimal:
    """The team's spendable credits: allocation + bonus (reserved ones are already taken out)."""
    balance = await credits.get_balance(session, principal.team_id)
    return balance.allocation_credits + balance.bonus_credits


@dataclass(frozen=True)
class Estimate:
    """A cost beside what the team can spend, for the estimate partials."""

    cost: Decimal | None
    available: Decimal
    free_plan: bool
    free_left: int = 0  # the person's free generations (image generation only)
    error: str | None = None  # why there is no estimate (an unknown model, a bad resolution)

    @property
    def free(self) -> bool:
        return self.free_left > 0

    @property
    def short(self) -> bool:
        return self.cost is not None and not self.free and self.available < self.cost


def explain(exc: PixelmintError) -> str:
    """A refusal to spend in words: what was needed, what there is, what to do."""
    if isinstance(exc, InsufficientCredits):
        required = show_credits(Decimal(str(exc.extra["requiredCredits"])))
        available = show_credits(Decimal(str(exc.extra["availableCredits"])))
        return (
            f"Not enough credits: this needs {required} credits and the team has {available} available "
            f"(credits held by running jobs are not available until they finish). {WHAT_TO_DO}"
        )
    if isinstance(exc, PlanUpgradeRequired):
        return (
            "The free plan runs only the free image generations each person gets; training, refining and "
            f"paid generations need a paid plan. {WHAT_TO_DO}"
        )
    return exc.message
