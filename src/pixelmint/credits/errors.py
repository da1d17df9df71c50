from __future__ import annotations

from decimal import Decimal

from pixelmint.kit.errors import PixelmintError


class InsufficientCredits(PixelmintError):
    """402: the team's available credits do not cover the operation; nothing was reserved."""

    status_code = 402
    code = "insufficient_credits"

    def __init__(self, *, required: Decimal, available: Decimal, operation: str) -> None:
        super().__init__(
            f"{operation} needs {required} credits; the team has {available} available.",
            requiredCredits=float(required),
            availableCredits=float(available),
            operation=operation,
        )
